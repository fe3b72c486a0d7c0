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

use super::BackendOptions;
use super::client::{Answer, Failure, HttpClient};
use super::control::{self, Classified, Control};
use super::events::{self, Event};
use super::sig::Signer;
use crate::channel;
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
        let answer = b.post(&session, &State::default(), events::encode(&[Event::Open]), 0).await;
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
        let metadata = set_meta(&answer.headers, &mut state);
        state.keep_alive = keep_alive_interval(&answer.headers);
        *session.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        let applied = b.apply_events(&session, &evs[1..]).await;
        if applied.ended {
            return Ok((Err(Reject { status: 502, reason: "the backend closed the connection".into() }), vec![]));
        }
        let task = tokio::spawn(run(b.clone(), session.clone()));
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

impl Session {
    fn new(b: &Backend, conn: ConnId, req: &OpenRequest) -> Session {
        let mut headers = HeaderMap::new();
        let mut forwarded_for = None;
        for (name, value) in &req.headers {
            if DROPPED_HEADERS.contains(&name.as_str()) || name.starts_with("meta-") {
                continue;
            }
            if name == "x-forwarded-for" {
                forwarded_for = Some(value.clone());
                continue;
            }
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        let ip = req.remote_addr.parse::<std::net::SocketAddr>().map(|a| a.ip().to_string());
        if let Ok(ip) = ip {
            let value = match forwarded_for {
                Some(before) => format!("{before}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static("x-forwarded-for"), v);
            }
        }
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("grip"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(events::CONTENT_TYPE));
        headers.insert(header::ACCEPT, HeaderValue::from_static(events::CONTENT_TYPE));
        headers.insert(HeaderName::from_static("connection-id"), HeaderValue::from(conn));
        Session {
            conn,
            uri: target(&b.opts.url, &req.path, &req.query),
            headers,
            grip: None,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            room: Notify::new(),
            settled: Notify::new(),
            task: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a client's message, first waiting while the queue is full.
    async fn push(&self, event: Event, max_bytes: usize) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.lock();
                if st.ended || st.last.is_some() || st.detached {
                    return;
                }
                if st.queue.is_empty() || st.queued_bytes < max_bytes {
                    st.queued_bytes += event.encoded_len();
                    st.queue.push_back(event);
                    drop(st);
                    self.wake.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// The next request's events: queued ones up to `max_bytes` (at least
    /// one), then the last event once the queue is empty.
    fn take(&self, max_bytes: usize) -> (Vec<Event>, bool) {
        let mut st = self.lock();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(e) = st.queue.front() {
            let len = e.encoded_len();
            if !batch.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            batch.extend(st.queue.pop_front());
        }
        st.queued_bytes -= bytes;
        st.in_flight = true;
        let last = st.queue.is_empty() && st.last.is_some();
        if last {
            batch.extend(st.last.take());
        }
        (batch, last)
    }
}

/// The session task: sends what the client queued, one request at a time,
/// and applies the answers, until the connection closes or the backend
/// fails.
async fn run(b: Arc<Backend>, s: Arc<Session>) {
    let mut last_request = tokio::time::Instant::now();
    let mut last_to_client = tokio::time::Instant::now();
    loop {
        let (keep_alive, client_keep_alive, pending) = {
            let st = s.lock();
            if st.ended {
                return;
            }
            (st.keep_alive, st.client_keep_alive.clone(), !st.queue.is_empty() || st.last.is_some())
        };
        if !pending {
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            let refresh = keep_alive.map_or(far, |k| last_request + k);
            let ping = client_keep_alive.as_ref().map_or(far, |k| last_to_client + k.every);
            tokio::select! {
                _ = s.wake.notified() => continue,
                _ = tokio::time::sleep_until(refresh) => {}
                _ = tokio::time::sleep_until(ping) => {
                    if let Some(k) = client_keep_alive {
                        b.sink.apply(vec![Effect::Emit { to: s.conn, msg: k.msg }]);
                        last_to_client = if k.interval { ping } else { tokio::time::Instant::now() };
                    }
                    continue;
                }
            }
        }
        let (batch, last) = s.take(b.opts.max_request_bytes);
        s.room.notify_waiters();
        let meta = s.lock().meta.clone();
        let state = State { meta, ..State::default() };
        last_request = tokio::time::Instant::now();
        let started = Instant::now();
        // The last request is tried once: the client is gone, and a host
        // that stops should not wait on a backend that is down.
        let retries = if last { 0 } else { b.opts.retries };
        let answer = b.post(&s, &state, events::encode(&batch), retries).await;
        b.observe("request", started);
        if last {
            // The client is gone: nothing in the answer can reach it.
            s.lock().ended = true;
            if let Err(f) = answer {
                tracing::debug!(conn = s.conn, route = %b.route, failure = %f, "the backend did not take the close");
            }
            return;
        }
        match b.check(answer) {
            Ok((headers, evs)) => {
                b.apply_headers(&s, &headers).await;
                let emits = evs.iter().any(|e| matches!(e, Event::Text(_) | Event::Binary(_)));
                let applied = b.apply_events(&s, &evs).await;
                if emits {
                    last_to_client = tokio::time::Instant::now();
                }
                b.sink.apply(applied.effects);
                if applied.ended {
                    s.end();
                    return;
                }
                s.lock().in_flight = false;
                s.settled.notify_waiters();
            }
            Err(Broken { reason, detail }) => {
                b.failed(s.conn, reason, &detail);
                b.sink.apply(vec![Effect::Close {
                    conn: s.conn,
                    code: close::HANDLER_ERROR,
                    reason: "backend error".into(),
                }]);
                s.end();
                return;
            }
        }
    }
}

impl Session {
    /// No more requests; clients waiting for room stop waiting.
    fn end(&self) {
        {
            let mut st = self.lock();
            st.ended = true;
            st.in_flight = false;
        }
        self.room.notify_waiters();
        self.settled.notify_waiters();
    }

    /// Whether nothing is queued or in flight.
    fn is_settled(&self) -> bool {
        let st = self.lock();
        st.ended || (st.queue.is_empty() && !st.in_flight)
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
    async fn post(&self, s: &Session, st: &State, body: Bytes, retries: u32) -> Result<Answer, Failure> {
        let mut headers = s.headers.clone();
        for (name, value) in &st.meta {
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

    /// A mid-session answer's `Set-Meta-*` and `Keep-Alive-Interval`.
    async fn apply_headers(&self, s: &Session, headers: &HeaderMap) {
        for (name, value) in headers {
            let Some(field) = name.as_str().strip_prefix("set-meta-") else { continue };
            if let (false, Ok(value)) = (field.is_empty(), value.to_str()) {
                self.set_meta(s, field, value).await;
            }
        }
        if headers.contains_key("keep-alive-interval") {
            s.lock().keep_alive = keep_alive_interval(headers);
        }
    }

    /// Turns an answer's events (after `OPEN`, at open) into effects, in
    /// order; control messages that touch the store (subscribe, metadata)
    /// are done first, as a plugin's imports are.
    async fn apply_events(&self, s: &Session, evs: &[Event]) -> Applied {
        let mut out = Applied::default();
        for e in evs {
            match e {
                Event::Text(content) | Event::Binary(content) => {
                    let text = matches!(e, Event::Text(_));
                    let content: &[u8] = match &s.grip {
                        None => content,
                        Some(prefix) => match control::classify(content, text, prefix) {
                            Classified::Message(m) => m,
                            Classified::Control(json) => {
                                self.control(s, json, &mut out).await;
                                if out.ended {
                                    return out;
                                }
                                continue;
                            }
                            Classified::Unprefixed => {
                                tracing::debug!(conn = s.conn, route = %self.route, "dropped a message without the GRIP message prefix");
                                continue;
                            }
                        },
                    };
                    let msg = if text {
                        match String::from_utf8(content.to_vec()) {
                            Ok(t) => Message::Text(t),
                            Err(_) => {
                                tracing::warn!(conn = s.conn, route = %self.route, "the backend sent a TEXT that is not UTF-8; dropped");
                                continue;
                            }
                        }
                    } else {
                        Message::Binary(content.to_vec())
                    };
                    out.effects.push(Effect::Emit { to: s.conn, msg });
                }
                Event::Close(code, reason) => {
                    let code = code.filter(|&c| close::may_send(c)).unwrap_or(close::NORMAL);
                    out.effects.push(Effect::Close { conn: s.conn, code, reason: close_reason(reason) });
                    out.ended = true;
                    return out;
                }
                Event::Disconnect => {
                    out.effects.push(Effect::Close { conn: s.conn, code: close::ABNORMAL, reason: String::new() });
                    out.ended = true;
                    return out;
                }
                // Wharf answers the client's pings itself and pings the
                // client on its own schedule (the route's ping_interval).
                Event::Ping(_) | Event::Pong(_) | Event::Open => {
                    tracing::debug!(conn = s.conn, route = %self.route, event = ?e, "ignored an event from the backend");
                }
            }
        }
        out
    }

    async fn control(&self, s: &Session, json: &[u8], out: &mut Applied) {
        let c = match control::parse(json) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(conn = s.conn, route = %self.route, why, "ignored a control message");
                return;
            }
        };
        let qualified = |name: &str| channel::qualified(&self.opts.channel_namespace, name);
        match c {
            Control::Subscribe { channel } => {
                let ch = qualified(&channel);
                match self.connections.subscribe(s.conn, &ch).await {
                    Ok(()) => out.effects.push(Effect::Subscribe { conn: s.conn, channel: ch }),
                    Err(e) => {
                        tracing::warn!(conn = s.conn, route = %self.route, channel, error = %e, "could not subscribe")
                    }
                }
            }
            Control::Unsubscribe { channel } => {
                let ch = qualified(&channel);
                if let Err(e) = self.connections.unsubscribe(s.conn, &ch).await {
                    tracing::warn!(conn = s.conn, route = %self.route, channel, error = %e, "could not unsubscribe");
                }
                out.effects.push(Effect::Unsubscribe { conn: s.conn, channel: ch });
            }
            Control::Detach => {
                let mut st = s.lock();
                st.detached = true;
                st.queued_bytes = 0;
                st.queue.clear();
            }
            Control::SetMeta { name, value } => self.set_meta(s, &name, &value).await,
            Control::KeepAlive { content, content_bin, message_type, timeout, mode } => {
                let msg = match (content, content_bin) {
                    (Some(text), _) if message_type.as_deref() != Some("binary") => Some(Message::Text(text)),
                    (Some(text), _) => Some(Message::Binary(text.into_bytes())),
                    (None, Some(b64)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(b64).ok().map(Message::Binary)
                    }
                    (None, None) => None,
                };
                let every = Duration::from_secs(timeout.unwrap_or(0));
                s.lock().client_keep_alive = msg.filter(|_| !every.is_zero()).map(|msg| ClientKeepAlive {
                    msg,
                    every,
                    interval: mode.as_deref() == Some("interval"),
                });
                s.wake.notify_one();
            }
            Control::Close { code, reason } => {
                let code = code.filter(|&c| close::may_send(c)).unwrap_or(close::NORMAL);
                let reason = close_reason(reason.unwrap_or_default().as_bytes());
                out.effects.push(Effect::Close { conn: s.conn, code, reason });
                out.ended = true;
            }
            Control::Session { .. } => {}
        }
    }

    /// Sets (or, with an empty value, removes) one metadata field, in the
    /// session and in the store.
    async fn set_meta(&self, s: &Session, name: &str, value: &str) {
        if HeaderName::from_bytes(format!("meta-{name}").as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
            tracing::warn!(conn = s.conn, route = %self.route, name, "ignored metadata that cannot be a header");
            return;
        }
        let name = name.to_ascii_lowercase();
        let stored = if value.is_empty() {
            s.lock().meta.remove(&name);
            self.connections.metadata_delete(s.conn, &name).await
        } else {
            s.lock().meta.insert(name.clone(), value.to_string());
            self.connections.metadata_set(s.conn, &name, value).await
        };
        if let Err(e) = stored {
            tracing::warn!(conn = s.conn, route = %self.route, name, error = %e, "could not store metadata");
        }
    }
}

/// The `Set-Meta-NAME` headers of an answer, applied to `st`; the fields set
/// (not removed), for the accept.
fn set_meta(headers: &HeaderMap, st: &mut State) -> Vec<(String, String)> {
    let mut set = Vec::new();
    for (name, value) in headers {
        let Some(field) = name.as_str().strip_prefix("set-meta-") else { continue };
        let Ok(value) = value.to_str() else { continue };
        if field.is_empty() {
            continue;
        }
        if value.is_empty() {
            st.meta.remove(field);
        } else {
            st.meta.insert(field.to_string(), value.to_string());
            set.push((field.to_string(), value.to_string()));
        }
    }
    set
}

fn keep_alive_interval(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get("keep-alive-interval")?.to_str().ok()?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs).max(MIN_KEEP_ALIVE))
}

fn is_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(events::CONTENT_TYPE)))
}

/// The backend URL with the client's path appended to its path, and the
/// client's query.
fn target(base: &Uri, path: &str, query: &str) -> Uri {
    let base_path = base.path().trim_end_matches('/');
    let mut pq = format!("{base_path}{path}");
    if !query.is_empty() {
        pq.push('?');
        pq.push_str(query);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = pq.parse().ok().or_else(|| "/".parse().ok());
    Uri::from_parts(parts).unwrap_or_else(|_| base.clone())
}

/// A close reason cut to what a close frame holds, at a character boundary.
fn close_reason(reason: &[u8]) -> String {
    let text = String::from_utf8_lossy(reason);
    let mut end = text.len().min(close::MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Up to `base` of random delay, so that clients of a backend that comes
/// back do not all retry at once.
fn jitter(base: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    base.mul_f64((r % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_clients_path_and_query_to_the_backends() {
        let base: Uri = "http://127.0.0.1:8090/base".parse().unwrap();
        assert_eq!(target(&base, "/chat", "x=1").to_string(), "http://127.0.0.1:8090/base/chat?x=1");
        let root: Uri = "http://127.0.0.1:8090/".parse().unwrap();
        assert_eq!(target(&root, "/chat", "").to_string(), "http://127.0.0.1:8090/chat");
    }

    #[test]
    fn reads_set_meta_and_keep_alive_headers() {
        let mut h = HeaderMap::new();
        h.insert("set-meta-nick", HeaderValue::from_static("ann"));
        h.insert("set-meta-old", HeaderValue::from_static(""));
        h.insert("keep-alive-interval", HeaderValue::from_static("20"));
        let mut st = State::default();
        st.meta.insert("old".into(), "x".into());
        assert_eq!(set_meta(&h, &mut st), vec![("nick".to_string(), "ann".to_string())]);
        assert_eq!(st.meta.into_iter().collect::<Vec<_>>(), vec![("nick".to_string(), "ann".to_string())]);
        assert_eq!(keep_alive_interval(&h), Some(Duration::from_secs(20)));
    }

    #[test]
    fn keeps_close_codes_a_server_may_send() {
        assert!(close::may_send(1000) && close::may_send(1011) && close::may_send(4001));
        assert!(!close::may_send(1005) && !close::may_send(1006) && !close::may_send(999) && !close::may_send(5000));
        assert_eq!(close_reason("é".repeat(100).as_bytes()).len(), 122);
    }
}
