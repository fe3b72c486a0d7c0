//! The WebSocket front end: one listener for HTTP and WebSocket, the upgrade
//! handshake (`http.rs`), and one task per connection that owns its socket
//! (`socket.rs`), over plain TCP or TLS (`stream.rs`), with permessage-deflate
//! where a route asks for it (`deflate/`), and the client's address read
//! through trusted proxies (`client_addr.rs`). Everything about a connection that is not WebSocket (its
//! admission, handler, mailbox and close) is the hub's.

mod client_addr;
mod deflate;
mod http;
mod socket;
mod stream;

pub use client_addr::TrustedProxies;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{ConnectionPolicy, Hub};

/// tungstenite's read buffer per connection. It zero-fills this much before
/// every read and every idle connection holds it (the default, 128 KiB,
/// cost ~134 KiB of RSS per idle connection; 2 KiB made one 5.5 KiB), so it
/// is small: the socket is read into a per-thread buffer under it
/// (`deflate/reader.rs`), and a message larger than this is still read from
/// the socket at once, then handed to tungstenite from memory.
pub const READ_BUFFER: usize = 256;
/// tungstenite's write buffer: only the frames tungstenite writes itself
/// go through it (pings, pongs, close frames); messages are written
/// straight to the socket (`socket.rs`).
pub const WRITE_BUFFER: usize = 4 * 1024;

/// Connections the kernel queues for `accept`: a connect storm of
/// thousands should wait in the queue, not have its SYNs dropped and
/// retried a second later (the kernel caps it at `net.core.somaxconn`).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Binds the WebSocket/HTTP listener with [`ACCEPT_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Settings of the listener (per-route settings are [`ConnectionPolicy`]).
#[derive(Clone)]
pub struct ServerOptions {
    /// Directory served over HTTP at `/`.
    pub static_dir: Option<PathBuf>,
    /// Time a client has to send its request headers.
    pub handshake_timeout: Duration,
    /// TCP connections still in their HTTP phase at once; past it: 503.
    pub max_handshakes: usize,
    /// Of those, how many one client IP may hold; past it: 503 (a trusted
    /// proxy is not held to it).
    pub max_handshakes_per_ip: usize,
    /// The proxies whose `Forwarded` / `X-Forwarded-For` name the client.
    pub trusted_proxies: TrustedProxies,
    /// TLS on this listener (`[tls]`): every connection handshakes first.
    pub tls: Option<crate::tls::TlsAcceptor>,
}

/// What the listener and every connection task share.
struct Listener {
    hub: Arc<Hub>,
    static_files: Option<StaticFiles>,
    opts: ServerOptions,
    /// TCP connections in their HTTP phase, in all and per client IP.
    handshakes: Arc<crate::hub::Counter>,
    handshakes_per_ip: crate::hub::KeyedCounter<std::net::IpAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The directory served at `/`: its files, never a dotfile (`.env`,
/// `.git/config`) and never a file a symlink leads to outside it.
struct StaticFiles {
    root: PathBuf,
    serve: tower_http::services::ServeDir,
}

impl StaticFiles {
    fn new(dir: &std::path::Path) -> Self {
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        StaticFiles { serve: tower_http::services::ServeDir::new(&root), root }
    }

    /// Whether the request path may be served: no segment starts with `.`,
    /// and the file it names (if it exists) is inside the directory once
    /// symlinks are resolved.
    async fn allows(&self, uri_path: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(uri_path).decode_utf8_lossy();
        let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| s.starts_with('.') || s.contains('\\')) {
            return false;
        }
        let path = segments.iter().fold(self.root.clone(), |p, s| p.join(s));
        match tokio::fs::canonicalize(&path).await {
            Ok(real) => real.starts_with(&self.root),
            // Not there: the file server answers 404.
            Err(_) => true,
        }
    }
}

/// The WebSocket settings of a connection under `policy`.
fn ws_config(policy: &ConnectionPolicy) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(policy.max_message_bytes))
        .max_frame_size(Some(policy.max_message_bytes))
}

/// Accepts connections until `shutdown` is cancelled, then closes every
/// WebSocket with 1001, waits for their close handlers, and returns.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Listener {
        hub,
        static_files: opts.static_dir.as_deref().map(StaticFiles::new),
        opts,
        handshakes: Arc::default(),
        handshakes_per_ip: crate::hub::KeyedCounter::default(),
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.tasks.spawn(http::serve_connection(shared.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    shared.tasks.close();
    shared.tasks.wait().await;
    Ok(())
}
