//! One task per open connection: reads frames and hands each message to the
//! handler in order, writes queued and direct replies, and ends the
//! connection exactly once, whatever ends it.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, error::ProtocolError};

use super::Listener;
use super::deflate::{self, Agreed, InflateError, reader::Inflating};
use super::stream::Stream;
use crate::close;
use crate::handler::Message;
use crate::hub::{Connection, Outbound};

/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queued messages written before the next flush.
const WRITE_BATCH: usize = 64;
/// Pings a client may send in one second; each makes the host write a
/// pong, so past it the connection is closed (1008).
const CLIENT_PINGS_PER_SECOND: u32 = 100;

/// How a connection ended.
enum End {
    /// The host closes with this code and reason.
    Host(u16, String),
    /// The client broke the protocol: the host closes with this code and
    /// reason, after the answers to the messages that came before.
    Fail(u16, String),
    /// The client sent a close frame.
    Client(u16, String),
    /// The transport failed or the client vanished.
    Gone,
}

type Ws = WebSocketStream<Inflating<Stream>>;

/// Runs an accepted connection to its end, then closes it (once).
pub(super) async fn run(shared: &Listener, upgraded: Upgraded, conn: Connection, deflate: Option<Agreed>) {
    let Some(mut ws) = websocket(upgraded, &conn, deflate) else {
        return Box::pin(conn.close(close::ABNORMAL, "")).await;
    };
    let path = conn.route().path.clone();
    let stats = Stats {
        received: shared.hub.metrics().messages_in.with_label_values(&[&*path]),
        sent: shared.hub.metrics().messages_out.with_label_values(&[&*path]),
        deflate,
    };
    let end = serve(shared, &mut ws, &conn, &stats).await;
    let (code, reason) = match end {
        // 1006 is never sent: a connection ended with it (a backend's
        // DISCONNECT) is dropped without a close frame.
        End::Host(close::ABNORMAL, reason) => (close::ABNORMAL, reason),
        // The ends are boxed: what they await would otherwise add to the
        // size of every connection's task.
        End::Host(code, reason) => {
            Box::pin(close_handshake(&mut ws, code, &reason)).await;
            (code, reason)
        }
        End::Fail(code, reason) => {
            Box::pin(async {
                // A handler that answers between events (a backend) may still
                // owe answers to the messages before the bad frame.
                conn.settle().await;
                let mut batch = Vec::new();
                conn.mailbox().take(&mut batch, usize::MAX);
                let _ = write_all(&mut ws, &mut batch, &stats, conn.policy().write_timeout).await;
                close_handshake(&mut ws, code, &reason).await;
            })
            .await;
            (code, reason)
        }
        End::Client(code, reason) => {
            // tungstenite queued the close reply; send it.
            let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, ws.flush())).await;
            (code, reason)
        }
        End::Gone => (close::ABNORMAL, String::new()),
    };
    Box::pin(conn.close(code, &reason)).await;
}

/// The upgraded connection as a WebSocket (deflate's reader under
/// tungstenite); `None` if hyper hands over another kind of stream.
fn websocket(upgraded: Upgraded, conn: &Connection, deflate: Option<Agreed>) -> Option<Ws> {
    let parts = upgraded.downcast::<TokioIo<Stream>>().ok()?;
    let config = super::ws_config(conn.policy());
    let stream =
        Inflating::new(parts.io.into_inner(), &parts.read_buf, deflate.is_some(), conn.policy().max_message_bytes);
    // Ready at once (it only wraps the stream).
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).now_or_never()
}

/// Pre-resolved message counters of one connection's route, and how its
/// messages are written.
struct Stats {
    received: prometheus::IntCounter,
    sent: prometheus::IntCounter,
    /// What was agreed for permessage-deflate, if anything.
    deflate: Option<Agreed>,
}

/// Server pings: when the next one is due and how many went unanswered.
/// Client pings: how many arrived in the current one-second window.
struct Pings {
    every: Option<Duration>,
    allowed_misses: u32,
    missed: u32,
    window: Instant,
    received: u32,
}

impl Pings {
    /// Any frame from the client shows it is alive.
    fn heard(&mut self) {
        self.missed = 0;
    }

    /// Counts a ping from the client; whether it is within the rate.
    fn client_ping(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            (self.window, self.received) = (now, 0);
        }
        self.received += 1;
        self.received <= CLIENT_PINGS_PER_SECOND
    }
}

/// What woke a connection's task.
enum Turn {
    Shutdown,
    Queued,
    Lifetime,
    Expiry,
    Ping,
    Frame(Option<Result<WsMessage, WsError>>),
}

/// A timer a connection may not have: it never fires when absent. Absent
/// timers cost a pointer, not a timer entry, in every connection's task.
async fn fire(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn serve(shared: &Listener, ws: &mut Ws, conn: &Connection, stats: &Stats) -> End {
    let (policy, inbox, id, path) = (conn.policy(), conn.mailbox(), conn.id(), &conn.route().path);
    let mut pings = Pings {
        every: policy.ping_interval,
        allowed_misses: policy.missed_pongs,
        missed: 0,
        window: Instant::now(),
        received: 0,
    };
    let after = |d: Duration| Box::pin(tokio::time::sleep_until(Instant::now() + d));
    let mut ping_timer = pings.every.map(after);
    let mut lifetime = policy.max_lifetime.map(after);
    // A token that expires closes the connection when it does.
    let mut expiry =
        conn.token_expires_at().map(|at| after(at.duration_since(std::time::SystemTime::now()).unwrap_or_default()));
    // One waiter on shutdown for the connection's life: creating one on
    // every turn costs a lock.
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
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
        // The waits end with the `select!`, so that what a turn then awaits
        // does not add to the size of every connection's task.
        let turn = tokio::select! {
            biased;
            _ = &mut shutdown => Turn::Shutdown,
            _ = inbox.ready() => Turn::Queued,
            _ = fire(&mut lifetime) => Turn::Lifetime,
            _ = fire(&mut expiry) => Turn::Expiry,
            _ = fire(&mut ping_timer) => Turn::Ping,
            frame = ws.next() => Turn::Frame(frame),
        };
        let frame = match turn {
            Turn::Shutdown => return End::Host(close::GOING_AWAY, "server shutting down".into()),
            Turn::Queued => continue,
            Turn::Lifetime => return End::Host(close::GOING_AWAY, "connection lifetime reached".into()),
            Turn::Expiry => return End::Host(close::TOKEN_EXPIRED, "token expired".into()),
            Turn::Ping => {
                if pings.missed >= pings.allowed_misses {
                    tracing::debug!(conn = id, route = %path, missed = pings.missed, "client stopped answering pings");
                    return End::Host(close::GOING_AWAY, "ping timeout".into());
                }
                pings.missed += 1;
                match tokio::time::timeout(policy.write_timeout, ws.send(WsMessage::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Gone,
                    Err(_) => return End::Host(close::POLICY, "client not reading".into()),
                }
                if let (Some(t), Some(every)) = (ping_timer.as_mut(), pings.every) {
                    t.as_mut().reset(Instant::now() + every);
                }
                continue;
            }
            Turn::Frame(frame) => frame,
        };
        pings.heard();
        let msg = match frame {
            Some(Ok(WsMessage::Text(t))) => Message::Text(t.as_str().to_owned()),
            Some(Ok(WsMessage::Binary(b))) => Message::Binary(b.to_vec()),
            Some(Ok(WsMessage::Ping(_))) if !pings.client_ping() => {
                tracing::debug!(conn = id, route = %path, "client sent more than {CLIENT_PINGS_PER_SECOND} pings in a second");
                return End::Host(close::POLICY, "too many pings".into());
            }
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
                    .unwrap_or((close::NO_STATUS, String::new()));
                return End::Client(code, reason);
            }
            Some(Err(e)) => return read_error(e),
            None => return End::Gone,
        };
        stats.received.inc();
        inbox.touch();
        // The handler's future is boxed behind the `Handler` trait,
        // so an idle connection task does not carry its size.
        match conn.message(msg).await {
            Ok(reply) => {
                // Effects of this event aimed at this connection were
                // queued first; keep their order before the reply.
                inbox.take(&mut batch, usize::MAX);
                batch.extend(reply.map(Outbound::from));
                if let Err(end) = write_all(ws, &mut batch, stats, policy.write_timeout).await {
                    return end;
                }
            }
            Err(failure) => {
                tracing::warn!(conn = id, route = %path, %failure, "on-message failed; closing the connection");
                return End::Host(close::HANDLER_ERROR, close::HANDLER_ERROR_REASON.into());
            }
        }
    }
}

/// Maps a read error to how the connection ends.
fn read_error(e: WsError) -> End {
    match e {
        WsError::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref::<InflateError>()) {
            Some(InflateError::TooBig) => End::Fail(close::TOO_BIG, "message too big".into()),
            Some(InflateError::Corrupt) => End::Fail(close::INVALID_PAYLOAD, "invalid compressed data".into()),
            None => End::Gone,
        },
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Gone,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        WsError::Capacity(_) => End::Fail(close::TOO_BIG, "message too big".into()),
        WsError::Utf8(_) => End::Fail(close::INVALID_PAYLOAD, "invalid UTF-8".into()),
        WsError::Protocol(_) => End::Fail(close::PROTOCOL_ERROR, "protocol error".into()),
        _ => End::Gone,
    }
}

/// The WebSocket frame of an outgoing message: compressed (RSV1 set) when
/// deflate was agreed and it makes the message smaller; otherwise its
/// payload is shared, not copied. A text payload is not validated again
/// (it is UTF-8 by construction).
fn frame(msg: Outbound, deflate: Option<Agreed>) -> WsMessage {
    let data = if msg.is_text() { Data::Text } else { Data::Binary };
    if let Some(packed) = deflate.and_then(|a| deflate::compress(a, msg.payload())) {
        let mut frame = Frame::message(packed, OpCode::Data(data), true);
        frame.header_mut().rsv1 = true;
        return WsMessage::Frame(frame);
    }
    WsMessage::Frame(Frame::message(msg.payload().clone(), OpCode::Data(data), true))
}

async fn flush(ws: &mut Ws, limit: Duration) -> Result<(), End> {
    match tokio::time::timeout(limit, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Host(close::POLICY, "client not reading".into())),
    }
}

/// Writes the messages in `batch` (emptying it), then flushes once; the
/// whole batch shares one write timeout.
async fn write_all(ws: &mut Ws, batch: &mut Vec<Outbound>, stats: &Stats, limit: Duration) -> Result<(), End> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len();
    let write = async {
        for msg in batch.drain(..) {
            ws.feed(frame(msg, stats.deflate)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(End::Gone),
        Err(_) => return Err(End::Host(close::POLICY, "client not reading".into())),
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
