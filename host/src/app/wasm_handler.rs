//! The Wasm plugin as a [`Handler`]: each event runs on the version of the
//! route's plugin that is current when the event starts, on a warm pooled
//! instance or, when the route says `instances = "fresh"`, a fresh one.

use std::sync::Arc;

use async_trait::async_trait;

use super::PluginSlot;
use crate::handler::{Accept, EventContext, Handler, Message, OpenRequest, Outcome, Reject, RouteHandlers};
use crate::runtime::CallContext;

/// A route's handler: a plugin slot and how its instances are used.
pub(crate) struct WasmHandler {
    slot: Arc<PluginSlot>,
    name: Arc<str>,
    handlers: Arc<RouteHandlers>,
    fresh: bool,
}

impl WasmHandler {
    /// The handler of a route served by `slot`.
    pub fn new(slot: Arc<PluginSlot>, fresh: bool) -> Self {
        let name: Arc<str> = Arc::from(slot.name());
        WasmHandler { handlers: Arc::new(RouteHandlers::one(name.clone())), name, slot, fresh }
    }

    fn cx<'a>(&self, event: &'a EventContext) -> CallContext<'a> {
        CallContext { event, fresh: self.fresh }
    }
}

#[async_trait]
impl Handler for WasmHandler {
    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn handlers(&self) -> Arc<RouteHandlers> {
        self.handlers.clone()
    }

    async fn open(&self, cx: &EventContext, req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
        self.slot.current().plugin.on_open(self.cx(cx), req).await
    }

    async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>> {
        self.slot.current().plugin.on_message(self.cx(cx), msg).await
    }

    async fn close(&self, cx: &EventContext, code: u16, reason: &str) -> Outcome<()> {
        self.slot.current().plugin.on_close(self.cx(cx), code, reason).await
    }
}
