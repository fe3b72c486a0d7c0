//! One task per open connection: reads frames and hands each message to the
//! handler in order, writes queued and direct replies, and ends the
//! connection exactly once, whatever ends it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
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
    /// A write to the client did not finish within the write timeout; it
    /// may have stopped inside a frame, so no close frame can follow.
    Stuck,
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
        End::Stuck => (close::POLICY, "client not reading".into()),
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

async fn flush(ws: &mut Ws, limit: Duration) -> Result<(), End> {
    match tokio::time::timeout(limit, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Host(close::POLICY, "client not reading".into())),
    }
}

/// Writes the messages in `batch` (emptying it) straight to the socket:
/// each message's frame as its mailbox holds it, so a broadcast's bytes are
/// the same for every recipient and are not copied again here. With
/// permessage-deflate agreed, a message that compression makes smaller is
/// framed again, compressed, for this connection. The frames go in as few
/// vectored writes as the socket takes, after anything tungstenite itself
/// queued (a pong), then one flush. The whole batch shares one write
/// timeout, armed only when the socket does not take it all at once.
async fn write_all(ws: &mut Ws, batch: &mut Vec<Outbound>, stats: &Stats, limit: Duration) -> Result<(), End> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(agreed) = stats.deflate {
        for msg in batch.iter_mut() {
            if let Some(packed) = deflate::compress(agreed, msg.payload()) {
                *msg = msg.deflated(packed);
            }
        }
    }
    let mut written = 0;
    let mut write = std::future::poll_fn(|cx| {
        ready!(ws.poll_flush_unpin(cx)).map_err(io::Error::other)?;
        poll_write_frames(ws.get_mut(), cx, batch, &mut written)
    });
    let result = match (&mut write).now_or_never() {
        Some(result) => result,
        None => match tokio::time::timeout(limit, write).await {
            Ok(result) => result,
            // Possibly in the middle of a frame: nothing more can be framed.
            Err(_) => return Err(End::Stuck),
        },
    };
    if result.is_err() {
        return Err(End::Gone);
    }
    stats.sent.inc_by(batch.len() as u64);
    if batch.capacity() > 16 {
        // A burst's buffer is not kept by an idle connection.
        *batch = Vec::new();
    } else {
        batch.clear();
    }
    Ok(())
}

/// Pieces (headers and payloads) handed to one vectored write.
const PIECES_PER_WRITE: usize = 64;
/// Pieces shorter than this are copied together into the thread's write
/// buffer: the kernel's cost per piece of a vectored write is far above
/// that of copying a few hundred bytes.
const COPY_BELOW: usize = 2 * 1024;
/// The thread's write buffer.
const WRITE_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Small pieces of the frames one write sends, side by side.
    static WRITE_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(WRITE_SCRATCH));
}

/// A piece of one vectored write: bytes in the thread's write buffer, or a
/// payload written from where it is.
enum Piece<'a> {
    Copied(std::ops::Range<usize>),
    InPlace(&'a [u8]),
}

/// Writes the frames of `batch` past the first `written` bytes, then
/// flushes the stream (TLS writes its records then; TCP has nothing to
/// flush). `written` counts what the socket took, across polls; each poll
/// lays out what is left again, so nothing is kept between polls.
fn poll_write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    batch: &[Outbound],
    written: &mut usize,
) -> Poll<io::Result<()>> {
    WRITE_BUF.with_borrow_mut(|buf| {
        loop {
            buf.clear();
            let mut pieces: [Piece<'_>; PIECES_PER_WRITE] = std::array::from_fn(|_| Piece::InPlace(&[]));
            let (mut skip, mut n) = (*written, 0usize);
            let parts = batch.iter().flat_map(|m| [m.header(), &m.payload()[..]]).filter_map(|part| {
                if skip >= part.len() {
                    skip -= part.len();
                    return None;
                }
                Some(&part[std::mem::take(&mut skip)..])
            });
            for part in parts {
                let copy = part.len() < COPY_BELOW && buf.len() + part.len() <= WRITE_SCRATCH;
                match (copy, n.checked_sub(1).map(|i| &mut pieces[i])) {
                    // Next to the copied piece before it: one piece.
                    (true, Some(Piece::Copied(range))) if range.end == buf.len() => {
                        buf.extend_from_slice(part);
                        range.end = buf.len();
                        continue;
                    }
                    (true, _) => {
                        let at = buf.len();
                        buf.extend_from_slice(part);
                        pieces[n] = Piece::Copied(at..buf.len());
                    }
                    (false, _) => pieces[n] = Piece::InPlace(part),
                }
                n += 1;
                if n == PIECES_PER_WRITE {
                    break;
                }
            }
            if n == 0 {
                return Pin::new(&mut *io).poll_flush(cx);
            }
            let slices: [IoSlice<'_>; PIECES_PER_WRITE] = std::array::from_fn(|i| match &pieces[i] {
                Piece::Copied(range) => IoSlice::new(&buf[range.clone()]),
                Piece::InPlace(part) => IoSlice::new(part),
            });
            match ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                k => *written += k,
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `per_write` bytes a call, and every
    /// other call is not ready (and wakes its task at once).
    struct Trickle {
        got: Vec<u8>,
        per_write: usize,
        calls: usize,
        flushed: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let before = this.got.len();
            for b in bufs {
                let room = this.per_write - (this.got.len() - before);
                this.got.extend_from_slice(&b[..b.len().min(room)]);
            }
            Poll::Ready(Ok(this.got.len() - before))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushed = true;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Every frame of a batch reaches the socket whole and in order, however
    /// the socket cuts the writes: small frames copied together, large
    /// payloads from where they are, past the thread's buffer and past the
    /// pieces of one write.
    #[tokio::test]
    async fn frames_reach_the_socket_whole_and_in_order() {
        let mut batch: Vec<Outbound> = (0..300).map(|i| Outbound::text(format!("message {i}"))).collect();
        batch.insert(5, Outbound::binary(vec![1u8; 3000]));
        batch.insert(50, Outbound::text("x".repeat(70_000)));
        batch.insert(51, Outbound::text(""));
        batch.push(Outbound::text("last").deflated(vec![9, 9]));
        let expected: Vec<u8> = batch.iter().flat_map(|m| [m.header(), &m.payload()[..]].concat()).collect();
        for per_write in [7, 1000, usize::MAX / 2] {
            let mut socket = Trickle { got: Vec::new(), per_write, calls: 0, flushed: false };
            let mut written = 0;
            std::future::poll_fn(|cx| poll_write_frames(&mut socket, cx, &batch, &mut written)).await.unwrap();
            assert_eq!(written, expected.len(), "{per_write} bytes a write");
            assert!(socket.got == expected, "{per_write} bytes a write: the bytes differ");
            assert!(socket.flushed, "flushed after the last frame");
        }
    }
}
