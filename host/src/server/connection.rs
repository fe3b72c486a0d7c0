//! One task per open connection: reads frames and hands each message to the
//! handler in order, writes queued and direct replies, and ends the
//! connection exactly once, whatever ends it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, error::ProtocolError};

use super::Shared;
use super::dispatch::Dispatch;
use super::http::Places;
use super::registry::{CLOSE_POLICY, Inbox};
use crate::events::{ConnId, Message};

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queued messages written before the next flush.
const WRITE_BATCH: usize = 64;

/// Close code for a handler that failed.
pub const CLOSE_HANDLER_ERROR: u16 = 1011;
/// Close code when the host shuts down, and for a client that stopped
/// answering pings or reached its route's maximum lifetime.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// How a connection ended.
enum End {
    /// The host closes with this code and reason.
    Host(u16, String),
    /// The client sent a close frame.
    Client(u16, String),
    /// The transport failed or the client vanished.
    Gone,
}

type Ws = WebSocketStream<TcpStream>;

/// Runs an accepted connection to its end, then calls the close handler once.
pub(crate) async fn run<D: Dispatch>(
    shared: Arc<Shared<D>>,
    mut ws: Ws,
    id: ConnId,
    path: Arc<str>,
    route: D::Route,
    inbox: Inbox,
    places: Places,
) {
    let stats = Stats {
        received: shared.metrics.messages_in.with_label_values(&[&*path]),
        sent: shared.metrics.messages_out.with_label_values(&[&*path]),
    };
    let end = serve(&shared, &mut ws, id, &path, &route, &inbox, &stats).await;
    let (code, reason) = match end {
        End::Host(code, reason) => {
            close_handshake(&mut ws, code, &reason).await;
            (code, reason)
        }
        End::Client(code, reason) => {
            // tungstenite queued the close reply; send it.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            (code, reason)
        }
        End::Gone => (1006, String::new()),
    };
    shared.registry.remove(id);
    drop(places);
    shared.metrics.connections_open.with_label_values(&[&*path]).dec();
    Box::pin(shared.dispatch.close(&route, id, code, &reason)).await;
}

/// Pre-resolved message counters of one connection's route.
struct Stats {
    received: prometheus::IntCounter,
    sent: prometheus::IntCounter,
}

/// Server pings: when the next one is due and how many went unanswered.
struct Pings {
    every: Option<Duration>,
    allowed_misses: u32,
    missed: u32,
}

impl Pings {
    /// Any frame from the client shows it is alive.
    fn heard(&mut self) {
        self.missed = 0;
    }
}

async fn serve<D: Dispatch>(
    shared: &Shared<D>,
    ws: &mut Ws,
    id: ConnId,
    path: &Arc<str>,
    route: &D::Route,
    inbox: &Inbox,
    stats: &Stats,
) -> End {
    let policy = D::policy(route);
    let mut pings = Pings { every: policy.ping_interval, allowed_misses: policy.missed_pongs, missed: 0 };
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let ping_timer = tokio::time::sleep_until(pings.every.map_or(far, |d| Instant::now() + d));
    let lifetime = tokio::time::sleep_until(policy.max_lifetime.map_or(far, |d| Instant::now() + d));
    // One waiter on shutdown for the connection's life: creating one on
    // every turn costs a lock.
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(ping_timer, lifetime, shutdown);
    let mut batch = Vec::new();
    loop {
        if let Some((code, reason)) = inbox.next(&mut batch, WRITE_BATCH) {
            return End::Host(code, reason);
        }
        // Everything queued (including effects of on-open and of the last
        // event aimed at this connection) goes out before the next read.
        if !batch.is_empty() {
            if let Err(end) = write_all(ws, &mut batch, stats, policy.write_timeout).await {
                return end;
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                return End::Host(CLOSE_GOING_AWAY, "server shutting down".into());
            }
            _ = inbox.ready() => {}
            _ = &mut lifetime, if policy.max_lifetime.is_some() => {
                return End::Host(CLOSE_GOING_AWAY, "connection lifetime reached".into());
            }
            _ = &mut ping_timer, if pings.every.is_some() => {
                if pings.missed >= pings.allowed_misses {
                    tracing::debug!(conn = id, route = %path, missed = pings.missed, "client stopped answering pings");
                    return End::Host(CLOSE_GOING_AWAY, "ping timeout".into());
                }
                pings.missed += 1;
                match tokio::time::timeout(policy.write_timeout, ws.send(WsMessage::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Gone,
                    Err(_) => return End::Host(CLOSE_POLICY, "client not reading".into()),
                }
                let every = pings.every.unwrap_or_default();
                ping_timer.as_mut().reset(Instant::now() + every);
            }
            frame = ws.next() => {
                pings.heard();
                let msg = match frame {
                    Some(Ok(WsMessage::Text(t))) => Message::Text(t.as_str().to_owned()),
                    Some(Ok(WsMessage::Binary(b))) => Message::Binary(b.to_vec()),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                        // A ping's pong is queued by tungstenite; send it now.
                        if let Err(end) = flush(ws, policy.write_timeout).await {
                            return end;
                        }
                        continue;
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                            .unwrap_or((1005, String::new()));
                        return End::Client(code, reason);
                    }
                    Some(Err(e)) => return read_error(e),
                    None => return End::Gone,
                };
                stats.received.inc();
                inbox.touch();
                // Boxed: the handler call is a large future, and an idle
                // connection task should not carry its size.
                match Box::pin(shared.dispatch.message(route, id, msg)).await {
                    Ok(reply) => {
                        // Effects of this event aimed at this connection were
                        // queued first; keep their order before the reply.
                        inbox.take(&mut batch, usize::MAX);
                        batch.extend(reply.map(to_ws));
                        if let Err(end) = write_all(ws, &mut batch, stats, policy.write_timeout).await {
                            return end;
                        }
                    }
                    Err(failure) => {
                        tracing::warn!(conn = id, route = %path, %failure, "on-message failed; closing the connection");
                        return End::Host(CLOSE_HANDLER_ERROR, "handler error".into());
                    }
                }
            }
        }
    }
}

/// Maps a read error to how the connection ends.
fn read_error(e: WsError) -> End {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => End::Gone,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        WsError::Capacity(_) => End::Host(1009, "message too big".into()),
        WsError::Utf8(_) => End::Host(1007, "invalid UTF-8".into()),
        WsError::Protocol(_) => End::Host(1002, "protocol error".into()),
        _ => End::Gone,
    }
}

/// Converts a host message into a WebSocket frame without copying.
pub fn to_ws(msg: Message) -> WsMessage {
    match msg {
        Message::Text(t) => WsMessage::text(t),
        Message::Binary(b) => WsMessage::binary(b),
    }
}

/// The host message in a WebSocket data frame; `None` for control frames.
pub fn from_ws(msg: &WsMessage) -> Option<Message> {
    match msg {
        WsMessage::Text(t) => Some(Message::Text(t.as_str().to_owned())),
        WsMessage::Binary(b) => Some(Message::Binary(b.to_vec())),
        _ => None,
    }
}

async fn flush(ws: &mut Ws, limit: Duration) -> Result<(), End> {
    match tokio::time::timeout(limit, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Host(CLOSE_POLICY, "client not reading".into())),
    }
}

/// Writes the messages in `batch` (emptying it), then flushes once; the
/// whole batch shares one write timeout.
async fn write_all(ws: &mut Ws, batch: &mut Vec<WsMessage>, stats: &Stats, limit: Duration) -> Result<(), End> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len();
    let write = async {
        for msg in batch.drain(..) {
            ws.feed(msg).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(End::Gone),
        Err(_) => return Err(End::Host(CLOSE_POLICY, "client not reading".into())),
    }
    stats.sent.inc_by(n as u64);
    if batch.capacity() > 16 {
        // A burst's buffer is not kept by an idle connection.
        *batch = Vec::new();
    }
    Ok(())
}

/// Sends a close frame and waits briefly for the client's answer.
async fn close_handshake(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    let closing = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}
