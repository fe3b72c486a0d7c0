//! A WebSocket-over-HTTP backend as a [`Handler`]. Opening a connection is
//! one request (`OPEN`) answered before the handshake completes; after that
//! each connection has a session: a task that sends the client's events in
//! order, one request at a time (what arrives while one is in flight goes in
//! the next), and turns each answer's events into effects the hub applies.
//! A client whose events wait beyond `max_request_bytes` is not read until
//! they have been sent, so a slow backend slows its clients down instead of
//! filling the host's memory.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use tokio::sync::Notify;

mod answer;
mod session;

use super::BackendOptions;
use super::client::{Answer, Failure, HttpClient};
use super::control;
use super::events::{self, Event};
use super::sig::Signer;
use crate::close;
use crate::handler::{
    Accept, ConnId, Effect, EffectSink, EventContext, Handler, HandlerFailure, Message, OpenRequest, Outcome, Reject,
};
use crate::metrics::Metrics;
use crate::store::Connections;

/// Most bytes of a backend's refusal passed on to the client.
const MAX_REJECT_BODY: usize = 64 << 10;
/// How long a `Grip-Sig` token is reused before a new one is signed.
const SIG_REUSE: Duration = Duration::from_secs(600);
/// Shortest `Keep-Alive-Interval` honoured.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Client handshake headers not passed to the backend: hop-by-hop and
/// WebSocket handshake headers, and the ones the gateway itself sets (a
/// client must not forge `Grip-Sig`, `Connection-Id` or `Meta-*`).
const DROPPED_HEADERS: [&str; 17] = [
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-connection",
    "proxy-authorization",
    "content-length",
    "content-type",
    "accept",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "connection-id",
    "grip-sig",
];

/// The handler of a route served by a backend.
pub struct BackendHandler {
    backend: Arc<Backend>,
    sessions: DashMap<ConnId, Arc<Session>>,
}

/// What every session of a route shares.
struct Backend {
    name: Arc<str>,
    route: Arc<str>,
    opts: BackendOptions,
    client: HttpClient,
    signer: Option<(Signer, Mutex<(Instant, HeaderValue)>)>,
    connections: Arc<dyn Connections>,
    sink: Arc<dyn EffectSink>,
    metrics: Arc<Metrics>,
    /// Requests in flight to the backend, at most `max_concurrent_requests`
    /// (each holds a connection, and a file descriptor, while it is).
    in_flight: tokio::sync::Semaphore,
}

/// One connection's session with the backend.
struct Session {
    conn: ConnId,
    uri: Uri,
    /// The client's handshake headers and the fixed ones, without meta.
    headers: HeaderMap,
    /// The message prefix, when the backend accepted the `grip` extension.
    grip: Option<String>,
    state: Mutex<State>,
    /// Wakes the session task: events were queued.
    wake: Notify,
    /// Wakes clients waiting for room in the queue.
    room: Notify,
    /// Wakes those waiting for the queue to be empty and no request in
    /// flight.
    settled: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Event>,
    queued_bytes: usize,
    /// The connection's metadata, sent as `Meta-*` on every request.
    meta: BTreeMap<String, String>,
    /// `CLOSE` or `DISCONNECT`, sent after the queue.
    last: Option<Event>,
    /// No request is sent any more.
    ended: bool,
    /// A request is in flight (or its answer being applied).
    in_flight: bool,
    /// The client's messages are no longer sent (GRIP `detach`).
    detached: bool,
    /// The backend's `Keep-Alive-Interval`.
    keep_alive: Option<Duration>,
    /// The GRIP `keep-alive` message to the client, when set.
    client_keep_alive: Option<ClientKeepAlive>,
}

#[derive(Clone)]
struct ClientKeepAlive {
    msg: Message,
    every: Duration,
    /// Send every `every` (interval) rather than after `every` of silence.
    interval: bool,
}

/// Why a session ends early.
struct Broken {
    reason: &'static str,
    detail: String,
}

/// What an answer's events came to.
#[derive(Default)]
struct Applied {
    effects: Vec<Effect>,
    /// The backend closed or dropped the connection.
    ended: bool,
}

impl BackendHandler {
    /// The handler of route `route`, talking to the backend `opts` names;
    /// effects of answers that arrive between events go to `sink`.
    pub fn new(
        route: Arc<str>,
        opts: BackendOptions,
        connections: Arc<dyn Connections>,
        sink: Arc<dyn EffectSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let signer = opts.sig.as_ref().map(|(key, iss)| {
            let s = Signer::new(key, iss);
            let first = HeaderValue::from_str(&s.token()).expect("a JWT is a valid header value");
            (s, Mutex::new((Instant::now(), first)))
        });
        let backend = Backend {
            name: Arc::from(super::handler_name(&route)),
            client: HttpClient::new(opts.connect_timeout, opts.max_concurrent_requests),
            in_flight: tokio::sync::Semaphore::new(opts.max_concurrent_requests),
            route,
            opts,
            signer,
            connections,
            sink,
            metrics,
        };
        BackendHandler { backend: Arc::new(backend), sessions: DashMap::new() }
    }
}

#[async_trait]
impl Handler for BackendHandler {
    fn name(&self) -> Arc<str> {
        self.backend.name.clone()
    }

    async fn open(&self, cx: &EventContext, req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
        let b = &self.backend;
        let mut session = Session::new(b, cx.conn, &req);
        let started = Instant::now();
        let answer = b.post(&session, events::encode(&[Event::Open]), 0).await;
        b.observe("open", started);
        let answer = match answer {
            Ok(a) => a,
            Err(f) => {
                b.failed(cx.conn, f.reason(), &format!("opening: {f}"));
                return Ok((Err(Reject { status: 502, reason: "backend unavailable".into() }), vec![]));
            }
        };
        if answer.status != StatusCode::OK || !is_events(&answer.headers) {
            let status = answer.status.as_u16();
            let status = if (400..=599).contains(&status) { status } else { 502 };
            let body = &answer.body[..answer.body.len().min(MAX_REJECT_BODY)];
            tracing::debug!(conn = cx.conn, route = %b.route, status, "the backend refused the connection");
            return Ok((Err(Reject { status, reason: String::from_utf8_lossy(body).into_owned() }), vec![]));
        }
        let evs = match events::decode(&answer.body) {
            Ok(evs) => evs,
            Err(e) => {
                b.failed(cx.conn, "garbage", &format!("opening: the answer's events: {e}"));
                return Ok((Err(Reject { status: 502, reason: "bad answer from the backend".into() }), vec![]));
            }
        };
        if evs.first() != Some(&Event::Open) {
            b.failed(cx.conn, "protocol", "opening: the answer does not start with OPEN");
            return Ok((Err(Reject { status: 502, reason: "bad answer from the backend".into() }), vec![]));
        }
        let header = |name: HeaderName| answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        session.grip = header(header::SEC_WEBSOCKET_EXTENSIONS).and_then(|v| control::grip_extension(&v));
        let subprotocol = header(header::SEC_WEBSOCKET_PROTOCOL);
        let session = Arc::new(session);
        let mut state = State::default();
        let metadata = answer::read_set_meta(&answer.headers, &mut state);
        state.keep_alive = answer::keep_alive_interval(&answer.headers);
        *session.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        let applied = b.apply_events(&session, &evs[1..]).await;
        if applied.ended {
            return Ok((Err(Reject { status: 502, reason: "the backend closed the connection".into() }), vec![]));
        }
        let task = tokio::spawn(session::run(b.clone(), session.clone()));
        *session.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        self.sessions.insert(cx.conn, session);
        Ok((Ok(Accept { subprotocol, metadata }), applied.effects))
    }

    async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>> {
        let Some(session) = self.sessions.get(&cx.conn).map(|s| s.clone()) else {
            return Err(HandlerFailure::Unavailable("no session with the backend".into()));
        };
        let event = match msg {
            Message::Text(t) => Event::Text(Bytes::from(t)),
            Message::Binary(b) => Event::Binary(Bytes::from(b)),
        };
        session.push(event, self.backend.opts.max_request_bytes).await;
        Ok((None, vec![]))
    }

    async fn settle(&self, cx: &EventContext) {
        let Some(session) = self.sessions.get(&cx.conn).map(|s| s.clone()) else { return };
        let settled = async {
            loop {
                let notified = session.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if session.is_settled() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(self.backend.opts.timeout, settled).await;
    }

    async fn close(&self, cx: &EventContext, code: u16, reason: &str) -> Outcome<()> {
        let Some((_, session)) = self.sessions.remove(&cx.conn) else { return Ok(((), vec![])) };
        let last = match code {
            close::ABNORMAL => Event::Disconnect,
            close::NO_STATUS => Event::Close(None, Bytes::new()),
            code => Event::Close(Some(code), Bytes::copy_from_slice(reason.as_bytes())),
        };
        {
            let mut st = session.state.lock().unwrap_or_else(|p| p.into_inner());
            if !st.ended {
                st.last = Some(last);
            }
        }
        session.wake.notify_one();
        session.room.notify_waiters();
        let task = session.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            // The last request is sent before the close returns (so a host
            // that stops tells its backends), within one request's time
            // (after the one in flight, which may be retrying).
            let wait = self.backend.opts.timeout * 2;
            if tokio::time::timeout(wait, task).await.is_err() {
                tracing::warn!(conn = cx.conn, route = %self.backend.route, "the backend did not take the close in time");
            }
        }
        Ok(((), vec![]))
    }
}

impl Backend {
    fn observe(&self, event: &str, started: Instant) {
        self.metrics.handler_seconds.with_label_values(&[&*self.name, event]).observe(started.elapsed().as_secs_f64());
    }

    fn failed(&self, conn: ConnId, reason: &'static str, detail: &str) {
        self.metrics.backend_errors.with_label_values(&[&*self.route, reason]).inc();
        tracing::warn!(conn, route = %self.route, backend = %self.opts.url, reason, detail, "backend request failed; closing the connection");
    }

    /// A `Grip-Sig` token, signed again every [`SIG_REUSE`].
    fn grip_sig(&self) -> Option<HeaderValue> {
        let (signer, cached) = self.signer.as_ref()?;
        let mut cached = cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0.elapsed() >= SIG_REUSE {
            *cached = (Instant::now(), HeaderValue::from_str(&signer.token()).expect("a JWT is a valid header value"));
        }
        Some(cached.1.clone())
    }

    /// Sends one request, again up to `retries` times (with backoff) while
    /// the backend cannot have seen it.
    async fn post(&self, s: &Session, body: Bytes, retries: u32) -> Result<Answer, Failure> {
        let mut headers = s.headers.clone();
        for (name, value) in &s.lock().meta {
            let name = HeaderName::from_bytes(format!("meta-{name}").as_bytes());
            if let (Ok(n), Ok(v)) = (name, HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        if let Some(sig) = self.grip_sig() {
            headers.insert(HeaderName::from_static("grip-sig"), sig);
        }
        // Waiting for a place is part of the request's time.
        let _permit = tokio::time::timeout(self.opts.timeout, self.in_flight.acquire())
            .await
            .map_err(|_| Failure::Timeout(self.opts.timeout))?
            .map_err(|_| Failure::Broken("the backend handler is gone".into()))?;
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .post(s.uri.clone(), headers.clone(), body.clone(), self.opts.timeout, self.opts.max_response_bytes)
                .await;
            match sent {
                Err(f) if f.retryable() && attempt < retries => {
                    let delay =
                        self.opts.retry_backoff * 2u32.saturating_pow(attempt) + jitter(self.opts.retry_backoff);
                    tracing::debug!(conn = s.conn, route = %self.route, failure = %f, ?delay, "backend unreachable; trying again");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// The headers and events of a mid-session answer, or why the session
    /// must end.
    fn check(&self, answer: Result<Answer, Failure>) -> Result<(HeaderMap, Vec<Event>), Broken> {
        let answer = answer.map_err(|f| Broken { reason: f.reason(), detail: f.to_string() })?;
        if answer.status != StatusCode::OK {
            return Err(Broken { reason: "status", detail: format!("the backend answered {}", answer.status) });
        }
        if !is_events(&answer.headers) {
            return Err(Broken { reason: "garbage", detail: format!("the answer is not {}", events::CONTENT_TYPE) });
        }
        let evs = events::decode(&answer.body)
            .map_err(|e| Broken { reason: "garbage", detail: format!("the answer's events: {e}") })?;
        Ok((answer.headers, evs))
    }
}

pub(super) fn is_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(events::CONTENT_TYPE)))
}

/// Up to `base` of random delay, so that clients of a backend that comes
/// back do not all retry at once.
fn jitter(base: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    base.mul_f64((r % 1000) as f64 / 1000.0)
}
