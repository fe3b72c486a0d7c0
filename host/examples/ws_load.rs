//! A closed-loop WebSocket load generator for measuring a running host:
//! N connections each send a text message and wait for one reply before
//! sending the next, for a fixed time. Prints replies per second and the
//! round-trip latency percentiles.
//!
//! ```sh
//! make build && target/release/wharf serve --config examples/wharf.toml &
//! cargo run --release -p wharf --example ws_load -- ws://127.0.0.1:8080/echo 1 10 64
//! cargo run --release -p wharf --example ws_load -- ws://127.0.0.1:8080/counter 16 10 8
//! ```
//!
//! Arguments: URL, connections (1), seconds (10), payload bytes (64). Payload
//! 0 holds the connections idle for the time instead (for memory per idle
//! connection, read from the server's /proc). Only loopback targets are
//! accepted; the run stops after its time.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    anyhow::ensure!(
        url.starts_with("ws://127.") || url.starts_with("ws://localhost") || url.starts_with("ws://[::1]"),
        "only loopback targets are allowed: {url}"
    );
    anyhow::ensure!((1..=19_000).contains(&connections) && (1..=600).contains(&seconds), "out of range");

    if size == 0 {
        let mut held = Vec::with_capacity(connections);
        for _ in 0..connections {
            held.push(connect_async(url.as_str()).await?.0);
        }
        println!("{url}: holding {} idle connections for {seconds} s", held.len());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return Ok(());
    }
    let payload = "x".repeat(size);
    let warmup = Duration::from_secs(1);
    let measure_from = Instant::now() + warmup;
    let stop_at = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (mut ws, _) = connect_async(url.as_str()).await?;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < stop_at {
                let t = Instant::now();
                ws.send(Message::text(payload.clone())).await?;
                tokio::time::timeout(Duration::from_secs(5), ws.next())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("connection closed"))??;
                if t >= measure_from {
                    samples.push(t.elapsed());
                }
            }
            ws.close(None).await?;
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    anyhow::ensure!(!samples.is_empty(), "no replies measured");
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{url} connections={connections} payload={size}B: {:.0} replies/s  p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}  ({} replies in {seconds} s)",
        samples.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        samples[samples.len() - 1],
        samples.len()
    );
    Ok(())
}
