//! A connection's life, the same for every front end: admission (origin,
//! subprotocols, connect rate, connection caps), open (record, `on-open`,
//! subprotocol, membership), its events one at a time, and a close that
//! runs exactly once however the connection ends.

use std::net::IpAddr;
use std::sync::Arc;

use super::registry::{Inbox, Mailbox, QueuePolicy};
use super::{ConnectionPolicy, Hub, Place, Route};
use crate::close;
use crate::handler::{ConnId, EventContext, HandlerFailure, Message, OpenRequest};
use crate::store::{ConnectionRecord, now_ms};

/// A handshake was refused: answer with this HTTP status and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status, 400..=599.
    pub status: u16,
    /// The response body (never internal error text).
    pub reason: String,
    /// Whether the client may retry in a second (`Retry-After: 1`).
    pub retry_after: bool,
    /// Why the host failed to open it (a handler failure), for the log and
    /// the conformance kit; never sent to a client.
    pub failure: Option<String>,
}

impl Refused {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Refused { status, reason: reason.into(), retry_after: false, failure: None }
    }

    fn retry(status: u16, reason: impl Into<String>) -> Self {
        Refused { retry_after: true, ..Refused::new(status, reason) }
    }

    fn handler_error(failure: String) -> Self {
        Refused { failure: Some(failure), ..Refused::new(500, close::HANDLER_ERROR_REASON) }
    }
}

/// The places an admitted connection holds under the host's and the
/// route's connection caps; given back when it is dropped.
pub struct Admission {
    _host: Place,
    _route: Option<Place>,
    /// What the client's token said, on a route with `[routes.auth]`.
    verified: Option<crate::auth::Verified>,
}

/// An accepted connection and the subprotocol to answer with.
pub struct Opened {
    /// The connection; its messages are in its mailbox.
    pub conn: Connection,
    /// The subprotocol chosen, one the client offered.
    pub subprotocol: Option<String>,
}

impl Hub {
    /// Checks a handshake against the route's policy and the caps, before
    /// any handler runs: a foreign origin (403), no supported subprotocol
    /// (400), too many new connections from `peer` (429), a missing or bad
    /// token (401), the host or the route full (503). On a route with a
    /// token check, the token's subprotocol entry leaves `req`.
    pub fn admit(
        &self,
        route: &Route,
        peer: IpAddr,
        origin: Option<&str>,
        req: &mut OpenRequest,
    ) -> Result<Admission, Refused> {
        let policy = &route.policy;
        if !policy.admit_origin(origin) {
            tracing::debug!(%peer, route = %route.path, origin, "origin not allowed");
            return Err(Refused::new(403, "origin not allowed"));
        }
        let token =
            policy.auth.as_ref().and_then(|_| crate::auth::take_token(&req.query, &req.headers, &mut req.subprotocols));
        policy.check_offer(&req.subprotocols).map_err(|why| Refused::new(400, why))?;
        if !policy.admit_rate(peer) {
            return Err(Refused::retry(429, "too many new connections; retry later"));
        }
        // After the rate limit: checking a signature costs CPU.
        let verified = match (&policy.auth, token) {
            (None, _) => None,
            (Some(_), None) => {
                tracing::debug!(%peer, route = %route.path, "no token");
                self.metrics.auth_refused.with_label_values(&[&*route.path, "missing"]).inc();
                return Err(Refused::new(401, "a token is required"));
            }
            (Some(verifier), Some(token)) => match verifier.verify(&token) {
                Ok(v) => Some(v),
                Err(why) => {
                    tracing::debug!(%peer, route = %route.path, why, "token refused");
                    self.metrics.auth_refused.with_label_values(&[&*route.path, "invalid"]).inc();
                    return Err(Refused::new(401, why));
                }
            },
        };
        let host = self
            .open
            .acquire(self.max_connections)
            .ok_or_else(|| Refused::new(503, "the host is at its connection limit"))?;
        let route_place = match policy.max_connections {
            Some(max) => {
                let counter = self.open_per_route.entry(route.path.clone()).or_default().clone();
                Some(counter.acquire(max).ok_or_else(|| Refused::new(503, "the route is at its connection limit"))?)
            }
            None => None,
        };
        Ok(Admission { _host: host, _route: route_place, verified })
    }

    /// Opens an admitted connection: records it, runs the handler's open,
    /// applies its effects, negotiates the subprotocol and makes it a member
    /// of its route. Whatever the handler emitted to it is already in its
    /// mailbox.
    pub async fn open(
        self: &Arc<Self>,
        route: Arc<Route>,
        mut admission: Admission,
        req: OpenRequest,
    ) -> Result<Opened, Refused> {
        let policy = &route.policy;
        let queue = QueuePolicy {
            capacity: policy.outbound_queue,
            max_bytes: policy.outbound_queue_bytes,
            slow_reader: policy.slow_reader,
        };
        let (id, inbox) = self.registry.reserve(route.path.clone(), queue);
        let cx = EventContext::new(id, route.path.clone(), route.handler.handlers());
        let offered = req.subprotocols.clone();
        let record = ConnectionRecord {
            id,
            route: route.path.clone(),
            plugin: route.handler.name(),
            remote_addr: req.remote_addr.clone(),
            connected_at_ms: now_ms(),
            metadata: admission.verified.as_mut().map(|v| std::mem::take(&mut v.metadata)).unwrap_or_default(),
            channels: Vec::new(),
        };
        if let Err(e) = self.store.connections.open(record).await {
            self.registry.remove(id);
            tracing::warn!(conn = id, route = %route.path, error = %e, "could not record the connection; refusing it");
            return Err(Refused::handler_error(format!("recording the connection: {e}")));
        }
        let accept = match route.handler.open(&cx, req).await {
            Ok((Ok(accept), effects)) => {
                for (key, value) in &accept.metadata {
                    if let Err(e) = self.store.connections.metadata_set(id, key, value).await {
                        self.forget(id).await;
                        tracing::warn!(conn = id, route = %route.path, error = %e, "could not store the accepted metadata; refusing the connection");
                        return Err(Refused::handler_error(format!("storing the accepted metadata: {e}")));
                    }
                }
                self.apply(effects);
                accept
            }
            Ok((Err(reject), effects)) => {
                self.apply(effects);
                self.forget(id).await;
                let status = if (400..=599).contains(&reject.status) { reject.status } else { 403 };
                return Err(Refused::new(status, reject.reason));
            }
            Err(failure) => {
                self.forget(id).await;
                tracing::warn!(conn = id, route = %route.path, %failure, "on-open failed; refusing the connection");
                return Err(Refused::handler_error(format!("on-open failed: {failure}")));
            }
        };
        let subprotocol = match policy.negotiate(&offered, accept.subprotocol.as_deref()) {
            Ok(p) => p,
            Err(why) => {
                // The handler accepted, so its close must still run once.
                self.registry.remove(id);
                tracing::warn!(conn = id, route = %route.path, why, "on-open chose a bad subprotocol; refusing the connection");
                self.closed(&route, &cx, close::HANDLER_ERROR, close::HANDLER_ERROR_REASON).await;
                return Err(Refused::handler_error(format!("on-open: {why}")));
            }
        };
        self.registry.activate(id);
        self.metrics.connections_total.with_label_values(&[&*route.path]).inc();
        self.metrics.connections_open.with_label_values(&[&*route.path]).inc();
        let expires_at = match (&policy.auth, &admission.verified) {
            (Some(auth), Some(v)) if auth.close_on_expiry() => v.expires_at,
            _ => None,
        };
        let live = Live { hub: self.clone(), route, cx, inbox, _admission: admission };
        Ok(Opened { conn: Connection { live: Some(live), expires_at }, subprotocol })
    }

    /// Forgets a connection that was never accepted.
    async fn forget(&self, id: ConnId) {
        self.registry.remove(id);
        let _ = self.store.connections.close(id).await;
    }

    /// Runs the handler's close of a connection that left the registry,
    /// applies its effects, and removes its record.
    async fn closed(&self, route: &Route, cx: &EventContext, code: u16, reason: &str) {
        match route.handler.close(cx, code, reason).await {
            Ok(((), effects)) => self.apply(effects),
            Err(failure) => tracing::warn!(conn = cx.conn, route = %route.path, %failure, "on-close failed"),
        }
        if let Err(e) = self.store.connections.close(cx.conn).await {
            tracing::warn!(conn = cx.conn, error = %e, "could not remove the connection's record");
        }
    }
}

struct Live {
    hub: Arc<Hub>,
    route: Arc<Route>,
    cx: EventContext,
    inbox: Inbox,
    _admission: Admission,
}

impl Live {
    async fn end(self, code: u16, reason: &str) {
        let Live { hub, route, cx, inbox, _admission } = self;
        hub.registry.remove(cx.conn);
        drop((inbox, _admission));
        hub.metrics.connections_open.with_label_values(&[&*route.path]).dec();
        hub.closed(&route, &cx, code, reason).await;
    }
}

/// An open connection as its front end holds it: its mailbox, its events,
/// and its close. Closing consumes it, so the close runs once; a connection
/// dropped without [`Connection::close`] (its task panicked) is closed in
/// the background with 1006.
pub struct Connection {
    live: Option<Live>,
    /// When its token expires, if the route closes it then.
    expires_at: Option<std::time::SystemTime>,
}

impl Connection {
    fn live(&self) -> &Live {
        self.live.as_ref().expect("a connection is live until it is closed")
    }

    /// Its id.
    pub fn id(&self) -> ConnId {
        self.live().cx.conn
    }

    /// When it is closed because its token expires (`[routes.auth]` with
    /// `close_on_expiry`).
    pub fn token_expires_at(&self) -> Option<std::time::SystemTime> {
        self.expires_at
    }

    /// The route it opened on.
    pub fn route(&self) -> &Arc<Route> {
        &self.live().route
    }

    /// What its route allows it.
    pub fn policy(&self) -> &ConnectionPolicy {
        &self.live().route.policy
    }

    /// Its outbound queue and close request.
    pub fn mailbox(&self) -> &Mailbox {
        &self.live().inbox
    }

    /// Hands a message to the handler and applies the effects it asked for;
    /// the answer is the direct reply. Effects aimed at this connection are
    /// in its mailbox before this returns.
    pub async fn message(&self, msg: Message) -> Result<Option<Message>, HandlerFailure> {
        let live = self.live();
        let (reply, effects) = live.route.handler.message(&live.cx, msg).await?;
        live.hub.apply(effects);
        Ok(reply)
    }

    /// Waits until the handler has answered the messages it was given (for
    /// a handler that answers between events; bounded by the handler).
    pub async fn settle(&self) {
        let live = self.live();
        live.route.handler.settle(&live.cx).await;
    }

    /// Ends the connection: it leaves the registry and gives back its
    /// places, then the handler's close runs and its record is removed.
    pub async fn close(mut self, code: u16, reason: &str) {
        if let Some(live) = self.live.take() {
            live.end(code, reason).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else { return };
        tracing::warn!(conn = live.cx.conn, route = %live.route.path, "connection dropped without a close; closing it");
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(live.end(close::ABNORMAL, ""));
            }
            Err(_) => {
                live.hub.registry.remove(live.cx.conn);
            }
        }
    }
}
