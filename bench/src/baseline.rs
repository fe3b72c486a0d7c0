//! The native baseline: a tokio-tungstenite server with no WebAssembly, built
//! with the host's socket settings (2 KiB read and 4 KiB write buffers, no Nagle,
//! 1 MiB messages), serving the same two routes the benchmarks drive:
//!
//! - `/echo` answers every message with itself;
//! - `/broadcast` greets a new connection with
//!   `{"connected":true,"yourConnectionId":"<id>"}` and sends every message
//!   as `<id> says: <text>` to every other connection, like the `broadcast`
//!   example.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages queued for one broadcast subscriber: Wharf's default
/// `outbound_queue`, so that both absorb the same unpaced burst.
const QUEUE: usize = 16_384;
/// Messages written before a flush.
const BATCH: usize = 64;

/// The WebSocket settings the host uses.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

#[derive(Default)]
struct Hub {
    next_id: AtomicU64,
    members: RwLock<HashMap<u64, mpsc::Sender<Message>>>,
}

/// Serves until the listener fails; each connection gets its own task.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = connection(stream, hub).await;
        });
    }
}

// tungstenite's handshake callback returns its large error response by value.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, hub: Arc<Hub>) -> anyhow::Result<()> {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await?;
    match path.as_str() {
        "/echo" => {
            while let Some(msg) = ws.next().await {
                match msg? {
                    m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
        "/broadcast" => {
            let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let (tx, mut rx) = mpsc::channel(QUEUE);
            hub.members.write().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
            let result = async {
                ws.send(Message::text(format!("{{\"connected\":true,\"yourConnectionId\":\"{id}\"}}"))).await?;
                loop {
                    tokio::select! {
                        Some(first) = rx.recv() => {
                            ws.feed(first).await?;
                            for _ in 1..BATCH {
                                match rx.try_recv() {
                                    Ok(m) => ws.feed(m).await?,
                                    Err(_) => break,
                                }
                            }
                            ws.flush().await?;
                        }
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => {
                                let out = Message::text(format!("{id} says: {}", t.as_str()));
                                let members = hub.members.read().unwrap_or_else(|p| p.into_inner());
                                for (other, tx) in members.iter() {
                                    if *other != id {
                                        let _ = tx.try_send(out.clone());
                                    }
                                }
                            }
                            Some(Ok(Message::Close(_))) | None => break,
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(e.into()),
                        },
                    }
                }
                anyhow::Ok(())
            }
            .await;
            hub.members.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
            result?;
        }
        _ => {}
    }
    Ok(())
}
