//! What the server needs from the application: a route lookup and the three
//! connection events. `app.rs` implements it; the server never sees Wasm.

use std::future::Future;
use std::sync::Arc;

use crate::events::{Accept, ConnId, HandlerFailure, Message, OpenRequest, Reject};

/// The application behind the sockets.
pub trait Dispatch: Send + Sync + 'static {
    /// The route key for a WebSocket path, `None` when no route is mounted.
    fn route(&self, path: &str) -> Option<Arc<str>>;

    /// A client asks to open a connection on `route`.
    fn open(
        &self,
        route: &Arc<str>,
        conn: ConnId,
        req: OpenRequest,
    ) -> impl Future<Output = Result<Result<Accept, Reject>, HandlerFailure>> + Send;

    /// A message arrived; the answer is the direct reply.
    fn message(
        &self,
        route: &Arc<str>,
        conn: ConnId,
        msg: Message,
    ) -> impl Future<Output = Result<Option<Message>, HandlerFailure>> + Send;

    /// The connection ended. Called exactly once per accepted connection,
    /// after it left the registry.
    fn close(&self, route: &Arc<str>, conn: ConnId, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}
