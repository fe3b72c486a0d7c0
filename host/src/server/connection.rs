//! One task per open connection: reads frames and hands each message to the
//! handler in order, writes queued and direct replies, and ends the
//! connection exactly once, whatever ends it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, error::ProtocolError};

use super::Shared;
use super::dispatch::Dispatch;
use super::registry::Inbox;
use crate::events::{ConnId, Message};

/// How long a write may wait on a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queued messages written before the next flush.
const WRITE_BATCH: usize = 64;

/// Close code for a handler that failed.
pub const CLOSE_HANDLER_ERROR: u16 = 1011;
/// Close code when the host shuts down.
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
    mut inbox: Inbox,
) {
    let stats = Stats {
        received: shared.metrics.messages_in.with_label_values(&[&*path]),
        sent: shared.metrics.messages_out.with_label_values(&[&*path]),
    };
    let end = serve(&shared, &mut ws, id, &path, &route, &mut inbox, &stats).await;
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
    shared.metrics.connections_open.with_label_values(&[&*path]).dec();
    Box::pin(shared.dispatch.close(&route, id, code, &reason)).await;
}

/// Pre-resolved message counters of one connection's route.
struct Stats {
    received: prometheus::IntCounter,
    sent: prometheus::IntCounter,
}

async fn serve<D: Dispatch>(
    shared: &Shared<D>,
    ws: &mut Ws,
    id: ConnId,
    path: &Arc<str>,
    route: &D::Route,
    inbox: &mut Inbox,
    stats: &Stats,
) -> End {
    // Messages emitted during on-open were queued before the handshake.
    if let Err(end) = drain(ws, inbox, stats).await {
        return end;
    }
    loop {
        if let Some((code, reason)) = inbox.control.pending() {
            return End::Host(code, reason);
        }
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => {
                return End::Host(CLOSE_GOING_AWAY, "server shutting down".into());
            }
            _ = inbox.control.notify.notified() => {}
            Some(msg) = inbox.rx.recv() => {
                if let Err(end) = write_batch(ws, inbox, msg, stats).await {
                    return end;
                }
            }
            frame = ws.next() => {
                let msg = match frame {
                    Some(Ok(WsMessage::Text(t))) => Message::Text(t.as_str().to_owned()),
                    Some(Ok(WsMessage::Binary(b))) => Message::Binary(b.to_vec()),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                        // A ping's pong is queued by tungstenite; send it now.
                        if let Err(end) = flush(ws).await {
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
                inbox.control.touch();
                // Boxed: the handler call is a large future, and an idle
                // connection task should not carry its size.
                match Box::pin(shared.dispatch.message(route, id, msg)).await {
                    Ok(reply) => {
                        // Effects of this event aimed at this connection were
                        // queued first; keep their order before the reply.
                        if let Err(end) = drain(ws, inbox, stats).await {
                            return end;
                        }
                        if let Some(reply) = reply
                            && let Err(end) = send(ws, to_ws(reply), stats).await
                        {
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

async fn flush(ws: &mut Ws) -> Result<(), End> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Host(1008, "client not reading".into())),
    }
}

async fn feed(ws: &mut Ws, msg: WsMessage) -> Result<(), End> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.feed(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Host(1008, "client not reading".into())),
    }
}

async fn send(ws: &mut Ws, msg: WsMessage, stats: &Stats) -> Result<(), End> {
    feed(ws, msg).await?;
    stats.sent.inc();
    flush(ws).await
}

/// Writes `first` and up to a batch of further queued messages, then flushes.
async fn write_batch(ws: &mut Ws, inbox: &mut Inbox, first: WsMessage, stats: &Stats) -> Result<(), End> {
    feed(ws, first).await?;
    let mut n = 1;
    while n < WRITE_BATCH {
        match inbox.rx.try_recv() {
            Ok(msg) => feed(ws, msg).await?,
            Err(_) => break,
        }
        n += 1;
    }
    stats.sent.inc_by(n as u64);
    flush(ws).await
}

/// Writes everything queued right now.
async fn drain(ws: &mut Ws, inbox: &mut Inbox, stats: &Stats) -> Result<(), End> {
    let mut n = 0;
    while let Ok(msg) = inbox.rx.try_recv() {
        feed(ws, msg).await?;
        n += 1;
    }
    if n == 0 {
        return Ok(());
    }
    stats.sent.inc_by(n);
    flush(ws).await
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
