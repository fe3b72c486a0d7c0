//! A route as a small graph of handlers: a chain that every connection's
//! open and close go through, and the handler each message goes to (the
//! last of the chain, or one picked by a top-level field of the message).
//!
//! - **Open** runs through the chain in order. Each handler's accepted
//!   metadata is stored before the next one's open, so it sees it (the
//!   last one's is the answer, which the hub stores as for one handler); a reject
//!   stops the chain (the client gets that status) and a failure stops it
//!   too (500). Either way the handlers that had accepted get their close,
//!   in reverse order, before the connection is forgotten.
//! - **Close** runs on every handler of the chain, in reverse order, once
//!   each, whatever ended the connection; a failing one does not keep the
//!   others from running.
//! - **Messages** go to the last handler of the chain, or, with a
//!   selection, to the handler its field's value names (a handler named
//!   there need not be in the chain: it gets messages only), else the
//!   default; binary and non-JSON messages go to the default. A value with
//!   no handler and no default is answered with an error reply.
//! - **Forwards** (`pipeline.forward`): a handler hands the message on to
//!   another handler of the route; in the effects of the event, the
//!   forward is replaced by what that handler did with it (its effects,
//!   then its direct reply to the connection), at most
//!   [`MAX_FORWARD_DEPTH`] deep.
//!
//! The connection belongs to the route: its record names every handler of
//! the graph ([`Pipeline::name`], comma-separated), and each may act on it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::handler::{
    Accept, Effect, EffectSink, EventContext, Handler, HandlerFailure, Message, OpenRequest, Outcome, Reject,
    RouteHandlers,
};
use crate::store::Connections;

mod select;

pub use select::Select;

/// The close code the chain's earlier handlers get when a later one
/// refused the connection: it never opened.
pub const NEVER_OPENED: u16 = 1006;

/// Most forwards one message passes through; a forward deeper than this
/// (a cycle) is dropped.
pub const MAX_FORWARD_DEPTH: usize = 8;

/// A route's handlers: the chain (the first `chain` of `handlers`), and
/// those only a selection names after it.
pub struct Pipeline {
    handlers: Vec<Arc<dyn Handler>>,
    chain: usize,
    select: Option<Select>,
    name: Arc<str>,
    graph: Arc<RouteHandlers>,
    connections: Arc<dyn Connections>,
    sink: Arc<dyn EffectSink>,
}

impl Pipeline {
    /// The graph of `handlers`, whose first `chain` are the chain (at least
    /// one), messages picked by `select` (else the chain's last). Accepted
    /// metadata goes to `connections` between opens; the effects of closes
    /// that run after a failed open go to `sink`.
    pub fn new(
        handlers: Vec<Arc<dyn Handler>>,
        chain: usize,
        select: Option<Select>,
        connections: Arc<dyn Connections>,
        sink: Arc<dyn EffectSink>,
    ) -> Self {
        assert!((1..=handlers.len()).contains(&chain), "a chain has one handler or more");
        let names: Vec<Arc<str>> = handlers.iter().map(|h| h.name()).collect();
        let name = Arc::from(names.join(","));
        let graph = Arc::new(RouteHandlers::new(names, chain));
        Pipeline { name, graph, handlers, chain, select, connections, sink }
    }

    /// The handler a message goes to, or the error reply when none does.
    fn target(&self, msg: &Message) -> Result<&Arc<dyn Handler>, Message> {
        match &self.select {
            None => Ok(&self.handlers[self.chain - 1]),
            Some(select) => select.pick(msg).map(|i| &self.handlers[i]),
        }
    }

    /// Runs the close of the chain's first `n` handlers, last first; their
    /// effects, the failures logged.
    async fn close_first(&self, n: usize, cx: &EventContext, code: u16, reason: &str) -> Vec<Effect> {
        let mut effects = Vec::new();
        for h in self.handlers[..n].iter().rev() {
            match h.close(cx, code, reason).await {
                Ok(((), fx)) => effects.extend(fx),
                Err(failure) => {
                    tracing::warn!(conn = cx.conn, route = %cx.route, handler = %h.name(), %failure, "on-close failed")
                }
            }
        }
        effects
    }
}

/// Whether `effects` hand the message on.
fn forwards(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::Forward { .. }))
}

impl Pipeline {
    /// `effects` with each forward replaced by what the handler it names
    /// did with the message: its effects (their forwards in turn, one level
    /// deeper), then its direct reply to the connection.
    async fn forwarded(&self, cx: &EventContext, effects: Vec<Effect>) -> Result<Vec<Effect>, HandlerFailure> {
        if !forwards(&effects) {
            return Ok(effects);
        }
        let mut out = Vec::with_capacity(effects.len());
        // One level per forward being expanded: the effects still to go
        // through, and the reply that follows them.
        let mut levels: Vec<(std::vec::IntoIter<Effect>, Option<Effect>)> = vec![(effects.into_iter(), None)];
        while let Some((rest, _)) = levels.last_mut() {
            let Some(effect) = rest.next() else {
                let (_, reply) = levels.pop().expect("a level");
                out.extend(reply);
                continue;
            };
            let Effect::Forward { conn, from, handler, msg } = effect else {
                out.push(effect);
                continue;
            };
            let Some(h) = self.graph.forward(&from, &handler).map(|i| &self.handlers[i]) else {
                tracing::warn!(conn, route = %cx.route, handler, "a forward to a handler the route lacks is dropped");
                continue;
            };
            if levels.len() > MAX_FORWARD_DEPTH {
                tracing::warn!(conn, route = %cx.route, handler, "a forward {MAX_FORWARD_DEPTH} deep is dropped (a cycle?)");
                continue;
            }
            let (reply, fx) = h.message(cx, msg).await?;
            let reply = reply.map(|msg| Effect::Emit { to: conn, msg });
            if forwards(&fx) {
                levels.push((fx.into_iter(), reply));
            } else {
                out.extend(fx);
                out.extend(reply);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Handler for Pipeline {
    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn handlers(&self) -> Arc<RouteHandlers> {
        self.graph.clone()
    }

    async fn open(&self, cx: &EventContext, req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
        let mut effects = Vec::new();
        let mut accept = Accept::default();
        for (i, h) in self.handlers[..self.chain].iter().enumerate() {
            let (answer, fx) = match h.open(cx, req.clone()).await {
                Ok(outcome) => outcome,
                Err(failure) => {
                    self.sink.apply(self.close_first(i, cx, NEVER_OPENED, "a later handler failed").await);
                    return Err(failure);
                }
            };
            effects.extend(fx);
            match answer {
                // The last one's metadata is the answer: the hub stores it.
                Ok(a) if i + 1 == self.chain => {
                    accept.metadata = a.metadata;
                    accept.subprotocol = a.subprotocol.or(accept.subprotocol);
                }
                Ok(a) => {
                    for (key, value) in &a.metadata {
                        if let Err(e) = self.connections.metadata_set(cx.conn, key, value).await {
                            let failure = HandlerFailure::Unavailable(format!("storing {}'s metadata: {e}", h.name()));
                            effects.extend(self.close_first(i + 1, cx, NEVER_OPENED, "not opened").await);
                            self.sink.apply(effects);
                            return Err(failure);
                        }
                    }
                    accept.subprotocol = a.subprotocol.or(accept.subprotocol);
                }
                Err(reject) => {
                    effects.extend(self.close_first(i, cx, NEVER_OPENED, "a later handler refused it").await);
                    return Ok((Err(reject), effects));
                }
            }
        }
        Ok((Ok(accept), effects))
    }

    async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>> {
        let (reply, effects) = match self.target(&msg) {
            Ok(h) => h.message(cx, msg).await?,
            Err(reply) => return Ok((Some(reply), Vec::new())),
        };
        Ok((reply, self.forwarded(cx, effects).await?))
    }

    async fn close(&self, cx: &EventContext, code: u16, reason: &str) -> Outcome<()> {
        Ok(((), self.close_first(self.chain, cx, code, reason).await))
    }

    async fn settle(&self, cx: &EventContext) {
        for h in &self.handlers {
            h.settle(cx).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The graph with handlers that record what they were told.

    use std::sync::Mutex;

    use std::collections::HashMap;

    use super::*;
    use crate::store::{ConnectionRecord, Presence, RecordCaps};

    /// What every test handler was told, in order: `name:event`.
    type Log = Arc<Mutex<Vec<String>>>;

    struct Node {
        name: &'static str,
        log: Log,
        /// `reject`, `fail` (on open), or nothing.
        open: &'static str,
        connections: Arc<dyn Connections>,
    }

    #[async_trait]
    impl Handler for Node {
        fn name(&self) -> Arc<str> {
            Arc::from(self.name)
        }

        async fn open(&self, cx: &EventContext, _req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
            let seen = self.connections.metadata_get(cx.conn, "user").await.unwrap();
            self.log.lock().unwrap().push(format!("{}:open user={}", self.name, seen.as_deref().unwrap_or("-")));
            let effect = Effect::Emit { to: cx.conn, msg: Message::Text(format!("{} opened", self.name)) };
            match self.open {
                "reject" => Ok((Err(Reject { status: 401, reason: "no".into() }), vec![effect])),
                "fail" => Err(HandlerFailure::Trap("open trapped".into())),
                _ => Ok((
                    Ok(Accept { subprotocol: None, metadata: vec![("user".into(), self.name.into())] }),
                    vec![effect],
                )),
            }
        }

        async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>> {
            self.log.lock().unwrap().push(format!("{}:message", self.name));
            if self.open == "message-fails" {
                return Err(HandlerFailure::Trap("message trapped".into()));
            }
            // `fwd:A|B|..` forwards it to the first of A, B, .. that is not
            // this one (else to A), after an emit of its own.
            if let Message::Text(t) = &msg
                && let Some(names) = t.strip_prefix("fwd:")
            {
                let to = names.split('|').find(|n| *n != self.name).unwrap_or(names.split('|').next().unwrap_or(""));
                let mine = Effect::Emit { to: cx.conn, msg: Message::Text(format!("{} saw it", self.name)) };
                let on =
                    Effect::Forward { conn: cx.conn, from: self.name(), handler: to.to_string(), msg: msg.clone() };
                return Ok((Some(Message::Text(format!("{} replied", self.name))), vec![mine, on]));
            }
            Ok((Some(Message::Text(format!("{} replied", self.name))), Vec::new()))
        }

        async fn close(&self, _cx: &EventContext, code: u16, _reason: &str) -> Outcome<()> {
            self.log.lock().unwrap().push(format!("{}:close {code}", self.name));
            if self.open == "close-fails" {
                return Err(HandlerFailure::Trap("close trapped".into()));
            }
            Ok(((), vec![Effect::Emit { to: 1, msg: Message::Text(format!("{} closed", self.name)) }]))
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<Effect>>);

    impl EffectSink for Sink {
        fn apply(&self, effects: Vec<Effect>) {
            self.0.lock().unwrap().extend(effects);
        }
    }

    struct Graph {
        pipeline: Pipeline,
        connections: Arc<dyn Connections>,
        log: Log,
        sink: Arc<Sink>,
        cx: EventContext,
    }

    /// Nodes `(name, open behaviour)`, the first `chain` the chain.
    async fn graph(nodes: &[(&'static str, &'static str)], chain: usize, select: Option<Select>) -> Graph {
        let log: Log = Log::default();
        let connections: Arc<dyn Connections> = Arc::new(Presence::new(RecordCaps::default()));
        let record = ConnectionRecord {
            id: 1,
            route: "/app".into(),
            plugin: "x".into(),
            remote_addr: String::new(),
            connected_at_ms: 0,
            metadata: Vec::new(),
            channels: Vec::new(),
        };
        connections.open(record).await.unwrap();
        let handlers: Vec<Arc<dyn Handler>> = nodes
            .iter()
            .map(|(name, open)| {
                Arc::new(Node { name, log: log.clone(), open, connections: connections.clone() }) as Arc<dyn Handler>
            })
            .collect();
        let sink = Arc::new(Sink::default());
        let pipeline = Pipeline::new(handlers, chain, select, connections.clone(), sink.clone());
        let graph = pipeline.handlers();
        Graph { pipeline, connections, log, sink, cx: EventContext::new(1, Arc::from("/app"), graph) }
    }

    fn logged(g: &Graph) -> Vec<String> {
        std::mem::take(&mut *g.log.lock().unwrap())
    }

    #[tokio::test]
    async fn open_runs_the_chain_in_order_with_each_ones_metadata_and_close_runs_it_backwards() {
        let g = graph(&[("auth", ""), ("rooms", "")], 2, None).await;
        assert_eq!(&*g.pipeline.name(), "auth,rooms");
        let (answer, effects) = g.pipeline.open(&g.cx, OpenRequest::default()).await.unwrap();
        let accept = answer.unwrap();
        // auth's metadata is stored between the opens; rooms', the last,
        // is the answer the hub stores.
        assert_eq!(accept.metadata, [("user".to_string(), "rooms".to_string())]);
        assert_eq!(g.connections.metadata_get(1, "user").await.unwrap().as_deref(), Some("auth"));
        assert_eq!(logged(&g), ["auth:open user=-", "rooms:open user=auth"], "auth's metadata is seen by rooms");
        assert_eq!(effects.len(), 2, "both opens' effects, in order: {effects:?}");
        g.pipeline.message(&g.cx, Message::Text("hi".into())).await.unwrap();
        assert_eq!(logged(&g), ["rooms:message"], "without a selection, the chain's last gets messages");
        let ((), effects) = g.pipeline.close(&g.cx, 1000, "bye").await.unwrap();
        assert_eq!(logged(&g), ["rooms:close 1000", "auth:close 1000"]);
        assert_eq!(effects.len(), 2);
    }

    #[tokio::test]
    async fn a_reject_stops_the_chain_and_closes_only_those_that_accepted() {
        let g = graph(&[("auth", "reject"), ("rooms", "")], 2, None).await;
        let (answer, _) = g.pipeline.open(&g.cx, OpenRequest::default()).await.unwrap();
        assert_eq!(answer.unwrap_err().status, 401);
        assert_eq!(logged(&g), ["auth:open user=-"], "rooms never runs, and no close for either");

        let g = graph(&[("a", ""), ("b", ""), ("c", "reject")], 3, None).await;
        let (answer, effects) = g.pipeline.open(&g.cx, OpenRequest::default()).await.unwrap();
        assert!(answer.is_err());
        let closed = format!("b:close {NEVER_OPENED}");
        assert_eq!(logged(&g), ["a:open user=-", "b:open user=a", "c:open user=b", closed.as_str(), "a:close 1006"]);
        assert_eq!(effects.len(), 5, "three opens' effects, then two closes': {effects:?}");
    }

    #[tokio::test]
    async fn a_failing_open_closes_those_that_accepted_and_their_effects_still_apply() {
        let g = graph(&[("a", ""), ("b", "fail"), ("c", "")], 3, None).await;
        assert!(g.pipeline.open(&g.cx, OpenRequest::default()).await.is_err());
        assert_eq!(logged(&g), ["a:open user=-", "b:open user=a", "a:close 1006"]);
        assert_eq!(g.sink.0.lock().unwrap().len(), 1, "a's close effect went to the hub");
    }

    #[tokio::test]
    async fn a_failing_close_does_not_keep_the_others_from_running() {
        let g = graph(&[("a", ""), ("b", "close-fails"), ("c", "")], 3, None).await;
        let ((), effects) = g.pipeline.close(&g.cx, 1011, "trap").await.unwrap();
        assert_eq!(logged(&g), ["c:close 1011", "b:close 1011", "a:close 1011"]);
        assert_eq!(effects.len(), 2);
    }

    fn texts(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Emit { msg: Message::Text(t), .. } => t.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_forward_runs_the_named_handler_in_the_effects_order_and_a_cycle_stops() {
        let g = graph(&[("limiter", ""), ("app", "")], 2, None).await;
        // Messages go to the chain's last: app forwards to limiter here.
        let (reply, effects) = g.pipeline.message(&g.cx, Message::Text("fwd:limiter".into())).await.unwrap();
        assert_eq!(reply, Some(Message::Text("app replied".into())));
        assert_eq!(texts(&effects), ["app saw it", "limiter saw it", "limiter replied"]);
        assert_eq!(logged(&g), ["app:message", "limiter:message"], "a forward to itself is dropped");

        // app forwards to limiter, which forwards back to app: a cycle, cut
        // at the depth limit, each forwarded handler's reply after its
        // effects, the deepest first.
        let (reply, effects) = g.pipeline.message(&g.cx, Message::Text("fwd:limiter|app".into())).await.unwrap();
        assert_eq!(reply, Some(Message::Text("app replied".into())));
        let forwarded: Vec<&str> = (0..MAX_FORWARD_DEPTH).map(|i| ["limiter", "app"][i % 2]).collect();
        let expected: Vec<String> = std::iter::once("app saw it".to_string())
            .chain(forwarded.iter().map(|n| format!("{n} saw it")))
            .chain(forwarded.iter().rev().map(|n| format!("{n} replied")))
            .collect();
        assert_eq!(texts(&effects), expected);
        assert_eq!(logged(&g).len(), 1 + MAX_FORWARD_DEPTH);

        let g = graph(&[("limiter", ""), ("app", "")], 2, None).await;
        let (_, effects) = g.pipeline.message(&g.cx, Message::Text("fwd:nobody".into())).await.unwrap();
        assert_eq!(texts(&effects), ["app saw it"], "a forward to a handler the route lacks is dropped");

        // An empty name is the next of the chain: a -> b -> c, which replies.
        let select = Select { field: "to".into(), by_value: HashMap::new(), default: Some(0) };
        let g = graph(&[("a", ""), ("b", ""), ("c", "")], 3, Some(select)).await;
        let (reply, effects) = g.pipeline.message(&g.cx, Message::Text("fwd:".into())).await.unwrap();
        assert_eq!(reply, Some(Message::Text("a replied".into())));
        assert_eq!(texts(&effects), ["a saw it", "b saw it", "c saw it", "c replied", "b replied"]);
        assert_eq!(logged(&g), ["a:message", "b:message", "c:message"], "c, the chain's last, has no next");

        // A chain of one, with `broken` reachable only by forward.
        let g = graph(&[("app", ""), ("broken", "message-fails")], 1, None).await;
        let failed = g.pipeline.message(&g.cx, Message::Text("fwd:broken".into())).await;
        assert!(failed.is_err(), "a forwarded handler's trap fails the event (1011)");
    }

    #[tokio::test]
    async fn messages_are_picked_by_field_with_a_default_and_an_error_reply_without_one() {
        let select = |default| Select {
            field: "action".into(),
            by_value: HashMap::from([("join".to_string(), 1), ("say".to_string(), 2)]),
            default,
        };
        let g = graph(&[("auth", ""), ("rooms", ""), ("chat", "")], 2, Some(select(Some(2)))).await;
        for (msg, to) in [
            (r#"{"action":"join"}"#, "rooms:message"),
            (r#"{"action":"say","text":"x"}"#, "chat:message"),
            (r#"{"action":"dance"}"#, "chat:message"),
            ("not json", "chat:message"),
            (r#"{"action":7}"#, "chat:message"),
        ] {
            g.pipeline.message(&g.cx, Message::Text(msg.into())).await.unwrap();
            assert_eq!(logged(&g), [to], "{msg}");
        }
        g.pipeline.message(&g.cx, Message::Binary(vec![1])).await.unwrap();
        assert_eq!(logged(&g), ["chat:message"], "binary goes to the default");
        // Only the chain sees opens and closes.
        g.pipeline.close(&g.cx, 1000, "").await.unwrap();
        assert_eq!(logged(&g), ["rooms:close 1000", "auth:close 1000"]);

        let g = graph(&[("auth", ""), ("rooms", "")], 2, Some(select(None))).await;
        let (reply, _) = g.pipeline.message(&g.cx, Message::Text(r#"{"action":"dance"}"#.into())).await.unwrap();
        assert_eq!(reply, Some(Message::Text(r#"{"error":"no handler for action \"dance\"","type":"error"}"#.into())));
        let (reply, _) = g.pipeline.message(&g.cx, Message::Binary(vec![0])).await.unwrap();
        assert_eq!(reply, Some(Message::Text(r#"{"error":"no handler for action none","type":"error"}"#.into())));
        assert!(logged(&g).is_empty());
    }
}
