//! The server's [`Dispatch`]: each event runs on the version of its route's
//! plugin that is current when the event starts, and the effects the handler
//! asked for are applied to the registry afterwards, in order.

use std::sync::Arc;

use super::{App, Route};
use crate::events::{Accept, ConnId, HandlerFailure, Message, OpenRequest, Reject};
use crate::runtime::CallContext;
use crate::server::{ConnectionPolicy, Dispatch};
use crate::store::{ConnectionRecord, now_ms};

/// The application as the server sees it.
pub(crate) struct Handle(pub Arc<App>);

fn context(route: &Route, conn: ConnId) -> CallContext {
    CallContext { conn, route: route.path.clone(), fresh: route.fresh }
}

impl Dispatch for Handle {
    type Route = Arc<Route>;

    fn route(&self, path: &str) -> Option<(Arc<str>, Arc<Route>)> {
        self.0.routes.load().get(path).map(|r| (r.path.clone(), r.clone()))
    }

    fn policy(route: &Arc<Route>) -> &ConnectionPolicy {
        &route.policy
    }

    async fn open(
        &self,
        route: &Arc<Route>,
        conn: ConnId,
        req: OpenRequest,
    ) -> Result<Result<Accept, Reject>, HandlerFailure> {
        let app = &self.0;
        let record = ConnectionRecord {
            id: conn,
            route: route.path.clone(),
            plugin: Arc::from(route.slot.name()),
            remote_addr: req.remote_addr.clone(),
            connected_at_ms: now_ms(),
            metadata: Vec::new(),
            channels: Vec::new(),
        };
        app.store.connection_open(record).await.map_err(|e| HandlerFailure::Unavailable(e.to_string()))?;
        let outcome = route.slot.current().plugin.on_open(&context(route, conn), req).await;
        match outcome {
            Ok((Ok(accept), effects)) => {
                for (key, value) in &accept.metadata {
                    if let Err(e) = app.store.metadata_set(conn, key, value).await {
                        let _ = app.store.connection_close(conn).await;
                        return Err(HandlerFailure::Unavailable(e.to_string()));
                    }
                }
                app.apply(effects);
                Ok(Ok(accept))
            }
            Ok((Err(reject), effects)) => {
                app.apply(effects);
                let _ = app.store.connection_close(conn).await;
                Ok(Err(reject))
            }
            Err(failure) => {
                let _ = app.store.connection_close(conn).await;
                Err(failure)
            }
        }
    }

    async fn message(&self, route: &Arc<Route>, conn: ConnId, msg: Message) -> Result<Option<Message>, HandlerFailure> {
        let (reply, effects) = route.slot.current().plugin.on_message(&context(route, conn), msg).await?;
        self.0.apply(effects);
        Ok(reply)
    }

    async fn close(&self, route: &Arc<Route>, conn: ConnId, code: u16, reason: &str) {
        let app = &self.0;
        match route.slot.current().plugin.on_close(&context(route, conn), code, reason).await {
            Ok(((), effects)) => app.apply(effects),
            Err(failure) => tracing::warn!(conn, route = %route.path, %failure, "on-close failed"),
        }
        if let Err(e) = app.store.connection_close(conn).await {
            tracing::warn!(conn, error = %e, "could not remove the connection's record");
        }
    }
}
