//! Each connection's session with the backend: the queue of the client's
//! events, and the task that sends them one request at a time and applies
//! the answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use tokio::sync::Notify;

use super::{Backend, Broken, DROPPED_HEADERS, Session, State};
use crate::close;
use crate::grip::events::{self, Event};
use crate::handler::{ConnId, Effect, OpenRequest};

impl Session {
    pub(super) fn new(b: &Backend, conn: ConnId, req: &OpenRequest) -> Session {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a client's message, first waiting while the queue is full.
    pub(super) async fn push(&self, event: Event, max_bytes: usize) {
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
    pub(super) fn take(&self, max_bytes: usize) -> (Vec<Event>, bool) {
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
pub(super) async fn run(b: Arc<Backend>, s: Arc<Session>) {
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
        last_request = tokio::time::Instant::now();
        let started = Instant::now();
        // The last request is tried once: the client is gone, and a host
        // that stops should not wait on a backend that is down.
        let retries = if last { 0 } else { b.opts.retries };
        let answer = b.post(&s, events::encode(&batch), retries).await;
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
    pub(super) fn end(&self) {
        {
            let mut st = self.lock();
            st.ended = true;
            st.in_flight = false;
        }
        self.room.notify_waiters();
        self.settled.notify_waiters();
    }

    /// Whether nothing is queued or in flight.
    pub(super) fn is_settled(&self) -> bool {
        let st = self.lock();
        st.ended || (st.queue.is_empty() && !st.in_flight)
    }
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
}
