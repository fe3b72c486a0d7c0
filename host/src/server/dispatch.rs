//! What the server needs from the application: a route lookup and the three
//! connection events. `app/` implements it; the server never sees Wasm.

use std::future::Future;
use std::sync::Arc;

use super::ConnectionPolicy;
use crate::events::{Accept, ConnId, HandlerFailure, Message, OpenRequest, Reject};

/// The application behind the sockets.
pub trait Dispatch: Send + Sync + 'static {
    /// What a connection holds to reach its route's handler: looked up once
    /// at the handshake, so a route removed later still serves the events of
    /// connections opened on it, up to their close.
    type Route: Send + Sync + 'static;

    /// The route mounted at a WebSocket path: its key (the path) and handle.
    fn route(&self, path: &str) -> Option<(Arc<str>, Self::Route)>;

    /// What the route allows its clients.
    fn policy(route: &Self::Route) -> &ConnectionPolicy;

    /// A client asks to open a connection on `route`.
    fn open(
        &self,
        route: &Self::Route,
        conn: ConnId,
        req: OpenRequest,
    ) -> impl Future<Output = Result<Result<Accept, Reject>, HandlerFailure>> + Send;

    /// A message arrived; the answer is the direct reply.
    fn message(
        &self,
        route: &Self::Route,
        conn: ConnId,
        msg: Message,
    ) -> impl Future<Output = Result<Option<Message>, HandlerFailure>> + Send;

    /// The connection ended. Called exactly once per accepted connection,
    /// after it left the registry.
    fn close(&self, route: &Self::Route, conn: ConnId, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}
