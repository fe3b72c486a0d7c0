//! Measures echo round-trip latency against a running host: one connection,
//! sequential round trips, 64-byte text messages by default.
//!
//! ```sh
//! make build && target/release/wharf serve --config examples/wharf.toml &
//! cargo run --release -p wharf --example echo_rtt -- ws://127.0.0.1:8080/echo 20000 64
//! ```
//!
//! Only loopback addresses are accepted; the run is bounded by its count.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());
    let count: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    anyhow::ensure!(
        url.starts_with("ws://127.") || url.starts_with("ws://localhost") || url.starts_with("ws://[::1]"),
        "only loopback targets are allowed: {url}"
    );
    let (mut ws, _) = connect_async(url.as_str()).await?;
    let payload = "x".repeat(size);
    let mut samples = Vec::with_capacity(count);
    let warmup = count / 10;
    let started = Instant::now();
    for i in 0..warmup + count {
        let t = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("connection closed"))??;
        anyhow::ensure!(reply.len() == size, "unexpected reply of {} bytes", reply.len());
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    let total = started.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{count} round trips of {size} B: p50 {:?}  p99 {:?}  p99.9 {:?}  mean {:?}  ({:.0} round trips/s incl. warm-up)",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        mean,
        (warmup + count) as f64 / total.as_secs_f64()
    );
    ws.close(None).await?;
    Ok(())
}
