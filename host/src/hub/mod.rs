//! The transport-independent core: the routes, the registry of this host's
//! connections and their mailboxes, each connection's life from admission
//! to a close that happens exactly once, and where every effect goes (this
//! host's registry, or another host through the [`Bus`]).
//!
//! Front ends (`transport/`) drive connections through [`Hub::admit`],
//! [`Hub::open`] and the [`Connection`] it returns; the admin API sends
//! through [`Hub::send`] and its siblings. Nothing here knows sockets,
//! tungstenite, Wasm or Redis.
//!
//! - [`registry`]: mailboxes (bounded, with the slow-reader policy), route
//!   and channel membership, and [`Registry::apply`], the one place an
//!   effect reaches mailboxes.
//! - [`admission`]: what a route allows its clients ([`ConnectionPolicy`])
//!   and the connection caps.
//! - [`lifecycle`]: admit, open, events, close exactly once.
//! - [`bus`]: the [`Bus`] to other hosts ([`LocalBus`] when there are none).
//! - [`outbound`]: a message as a mailbox holds it, shared by recipients.

mod admission;
mod bus;
mod history;
mod lifecycle;
mod outbound;
mod registry;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde_json::Value;

pub use admission::{ConnectionPolicy, Counter, KeyedCounter, Place};
pub use bus::{Bus, LocalBus, Unreachable};
pub use history::ChannelLog;
pub use lifecycle::{Admission, Connection, Opened, Refused};
pub use outbound::Outbound;
pub use registry::{Delivery, Inbox, Mailbox, QueuePolicy, Registry};

use crate::conn_id::host_of;
use crate::handler::{ChannelHistory, ConnId, Effect, Handler, Message};
use crate::metrics::Metrics;
use crate::store::Store;

/// How long the admin API waits for another host to say when its
/// connections were last active.
const ACTIVITY_WAIT: Duration = Duration::from_millis(500);

/// One mounted route: its path, the handler behind it, and what it allows
/// its clients.
pub struct Route {
    /// The path clients open.
    pub path: Arc<str>,
    /// The handler of its connections' events.
    pub handler: Arc<dyn Handler>,
    /// What it allows its clients.
    pub policy: ConnectionPolicy,
}

/// The routes, this host's connections, and the way to the other hosts.
pub struct Hub {
    routes: ArcSwap<HashMap<Arc<str>, Arc<Route>>>,
    registry: Arc<Registry>,
    store: Store,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    history: Arc<ChannelLog>,
    /// Open connections on this host at once.
    max_connections: usize,
    open: Arc<admission::Counter>,
    open_per_route: DashMap<Arc<str>, Arc<admission::Counter>>,
}

impl Hub {
    /// A hub with no routes. `registry` hands out this host's ids; at most
    /// `max_connections` are open at once.
    pub fn new(
        registry: Arc<Registry>,
        store: Store,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        max_connections: usize,
    ) -> Self {
        let history = Arc::new(ChannelLog::new(store.history.clone(), registry.clone(), &metrics));
        Hub {
            routes: ArcSwap::from_pointee(HashMap::new()),
            registry,
            store,
            bus,
            metrics,
            history,
            max_connections,
            open: Arc::default(),
            open_per_route: DashMap::new(),
        }
    }

    /// The route mounted at `path`. A connection keeps the route it opened
    /// on, so a route removed later still serves it up to its close.
    pub fn route(&self, path: &str) -> Option<Arc<Route>> {
        self.routes.load().get(path).cloned()
    }

    /// Every mounted route.
    pub fn routes(&self) -> Arc<HashMap<Arc<str>, Arc<Route>>> {
        self.routes.load_full()
    }

    /// Mounts `routes` in place of the current ones; connections of the
    /// routes that are gone are asked to close with `code`. The removed
    /// paths, sorted.
    pub fn set_routes(&self, routes: HashMap<Arc<str>, Arc<Route>>, code: u16, reason: &str) -> Vec<String> {
        let old = self.routes.swap(Arc::new(routes));
        let now = self.routes.load();
        let mut removed: Vec<String> = old.keys().filter(|p| !now.contains_key(*p)).map(|p| p.to_string()).collect();
        removed.sort();
        for path in &removed {
            let n = self.registry.close_route(path, code, reason);
            tracing::info!(route = %path, connections = n, "route removed; closing its connections");
        }
        removed
    }

    /// This host's connections.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store handlers and the admin API read.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The way to the other hosts.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Channel history and its rules.
    pub fn history(&self) -> &Arc<ChannelLog> {
        &self.history
    }

    /// Applies what a handler asked for, in order: an effect on another
    /// host's connection goes to that host, a fan-out goes to every other
    /// host and to this host's members, the rest to this host's registry.
    pub fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::Forward { conn, handler, .. } = &effect {
                // Only a route's pipeline takes forwards, before this.
                tracing::debug!(conn, handler, "a forward outside a route's pipeline is dropped");
                continue;
            }
            match effect.recipient() {
                Some(id) if !self.bus.is_local(id) => self.bus.forward(&effect),
                Some(_) => {
                    self.registry.apply(effect);
                }
                None => {
                    let effect = match effect {
                        Effect::Publish { channel, msg } => match self.history.limits(&channel) {
                            // Kept first, then delivered by the history.
                            Some(limits) => {
                                self.history.queue(channel, limits, msg);
                                continue;
                            }
                            None => Effect::Publish { channel, msg },
                        },
                        other => other,
                    };
                    self.bus.forward(&effect);
                    self.registry.apply(effect);
                }
            }
        }
    }

    /// Queues a message for connection `id`, on whichever host holds it.
    pub async fn send(&self, id: ConnId, msg: Message) -> Delivery {
        if self.bus.is_local(id) {
            self.registry.send(id, msg.into())
        } else {
            self.to_remote(id, Effect::Emit { to: id, msg }).await
        }
    }

    /// Asks connection `id`, on whichever host holds it, to close:
    /// `Queued` when it is closing, `Gone` when no host holds it.
    pub async fn close(&self, id: ConnId, code: u16, reason: &str) -> Delivery {
        if !self.bus.is_local(id) {
            return self.to_remote(id, Effect::Close { conn: id, code, reason: reason.to_string() }).await;
        }
        if self.registry.close(id, code, reason) { Delivery::Queued } else { Delivery::Gone }
    }

    /// Sends to a channel's members on every host; how many on this one.
    /// A channel that keeps history takes [`ChannelLog::publish_now`].
    pub fn publish(&self, channel: &str, msg: Message) -> usize {
        let delivered = self.registry.publish(channel, &Outbound::from(msg.clone()));
        self.bus.forward(&Effect::Publish { channel: channel.to_string(), msg });
        delivered
    }

    /// When the clients of `ids` last sent a message (Unix milliseconds),
    /// asked of the hosts holding them; ids no host answered for are left
    /// out.
    pub async fn last_active(&self, ids: &[ConnId]) -> HashMap<ConnId, u64> {
        let mut seen = HashMap::new();
        let mut remote: BTreeMap<u32, Vec<ConnId>> = BTreeMap::new();
        for &id in ids {
            if self.bus.is_local(id) {
                seen.extend(self.registry.last_active_ms(id).map(|at| (id, at)));
            } else {
                remote.entry(host_of(id)).or_default().push(id);
            }
        }
        let asked = remote.into_iter().map(|(host, conns)| self.bus.activity(host, conns, ACTIVITY_WAIT));
        seen.extend(futures_util::future::join_all(asked).await.into_iter().flatten());
        seen
    }

    /// Whether this host is healthy, and the details `/healthz` shows.
    pub fn health(&self) -> (bool, Value) {
        let (mut healthy, mut body) = self.bus.health();
        if let Some(why) = self.store.kv.health() {
            healthy = false;
            body["status"] = "degraded".into();
            body["store"] = why.into();
        }
        (healthy, body)
    }

    /// Sends an effect on another host's connection now, if any host holds
    /// it.
    async fn to_remote(&self, id: ConnId, effect: Effect) -> Delivery {
        match self.store.connections.plugin(id).await {
            Ok(None) => return Delivery::Gone,
            Ok(Some(_)) => {}
            Err(_) => return Delivery::Unreachable,
        }
        match self.bus.send_now(&effect).await {
            Ok(true) => Delivery::Queued,
            Ok(false) => Delivery::Gone,
            Err(e) => {
                tracing::warn!(conn = id, error = %e, "could not reach the connection's host");
                Delivery::Unreachable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::config::SlowReader;
    use crate::conn_id::id_base;
    use crate::store::StoreKind;

    /// A bus for host 0 among others: records what it is asked to carry.
    #[derive(Default)]
    struct RecordingBus(Mutex<Vec<Effect>>);

    #[async_trait]
    impl Bus for RecordingBus {
        fn is_local(&self, id: ConnId) -> bool {
            host_of(id) == 0
        }
        fn forward(&self, effect: &Effect) {
            self.0.lock().unwrap().push(effect.clone());
        }
        async fn send_now(&self, _effect: &Effect) -> Result<bool, Unreachable> {
            Ok(true)
        }
        async fn activity(&self, _host: u32, _conns: Vec<ConnId>, _wait: Duration) -> Vec<(ConnId, u64)> {
            Vec::new()
        }
        fn health(&self) -> (bool, Value) {
            (true, json!({}))
        }
        async fn leave(&self) {}
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    #[test]
    fn effects_go_to_this_host_other_hosts_or_both() {
        let bus = Arc::new(RecordingBus::default());
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.outbound_dropped.clone()));
        let store = crate::store::open(&StoreKind::Memory, std::path::Path::new("."), Default::default()).unwrap();
        let hub = Hub::new(registry.clone(), store, bus.clone(), metrics, 10);
        let queue = QueuePolicy { capacity: 8, max_bytes: 1 << 20, slow_reader: SlowReader::Close };
        let (here, inbox) = registry.reserve("/r".into(), queue);
        registry.activate(here);
        registry.subscribe(here, "room");
        let there = id_base(3) + 1;

        hub.apply(vec![
            Effect::Emit { to: here, msg: text("local") },
            Effect::Emit { to: there, msg: text("remote") },
            Effect::Publish { channel: "room".into(), msg: text("everyone") },
            Effect::Broadcast { route: "/r".into(), msg: text("route"), except: None },
            Effect::Close { conn: there, code: 4000, reason: String::new() },
        ]);
        let mut got = Vec::new();
        inbox.take(&mut got, usize::MAX);
        let got: Vec<Message> = got.iter().map(Outbound::to_message).collect();
        assert_eq!(got, [text("local"), text("everyone"), text("route")], "this host's share, in order");
        let forwarded = bus.0.lock().unwrap().clone();
        assert_eq!(
            forwarded,
            [
                Effect::Emit { to: there, msg: text("remote") },
                Effect::Publish { channel: "room".into(), msg: text("everyone") },
                Effect::Broadcast { route: "/r".into(), msg: text("route"), except: None },
                Effect::Close { conn: there, code: 4000, reason: String::new() },
            ],
            "what concerns other hosts, in order; nothing for this host's own connection"
        );
        assert_eq!(inbox.pending(), None, "the close was for the other host's connection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_effects_publish_to_a_channel_with_history_is_kept_then_delivered_in_order() {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.outbound_dropped.clone()));
        let store = crate::store::open(&StoreKind::Memory, std::path::Path::new("."), Default::default()).unwrap();
        let bus = Arc::new(RecordingBus::default());
        let hub = Hub::new(registry.clone(), store, bus.clone(), metrics, 10);
        let limits = crate::history::Limits { size: 10, ttl: Duration::from_secs(60), max_bytes: 1 << 20 };
        let rule = crate::history::Rule { pattern: "room".into(), namespace: None, limits };
        hub.history().set_rules(crate::history::Rules(vec![rule]));
        let queue = QueuePolicy { capacity: 8, max_bytes: 1 << 20, slow_reader: SlowReader::Close };
        let (member, inbox) = registry.reserve("/r".into(), queue);
        registry.subscribe(member, "g:room");
        // What a backend's answer asks for is applied without waiting.
        hub.apply(vec![
            Effect::Publish { channel: "g:room".into(), msg: text("one") },
            Effect::Publish { channel: "g:room".into(), msg: text("two") },
        ]);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 2 && tokio::time::Instant::now() < deadline {
            inbox.take(&mut got, usize::MAX);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(got.iter().map(Outbound::to_message).collect::<Vec<_>>(), [text("one"), text("two")]);
        let page = hub.history().read("g:room", limits, None, 10).await.unwrap();
        assert_eq!(
            page.publications.iter().map(|p| (p.offset, p.msg.clone())).collect::<Vec<_>>(),
            [(1, text("one")), (2, text("two"))]
        );
        assert!(bus.0.lock().unwrap().is_empty(), "the history delivers it, not the plain fan-out");
    }

    /// A handler with a bug in the host's side of it: a message `panic`
    /// panics in the connection's task. Records each close.
    #[derive(Default)]
    struct Panics(Mutex<Vec<(ConnId, u16)>>);

    #[async_trait]
    impl crate::handler::Handler for Panics {
        fn name(&self) -> Arc<str> {
            Arc::from("panics")
        }
        async fn open(
            &self,
            _cx: &crate::handler::EventContext,
            _req: crate::handler::OpenRequest,
        ) -> crate::handler::Outcome<Result<crate::handler::Accept, crate::handler::Reject>> {
            Ok((Ok(crate::handler::Accept::default()), Vec::new()))
        }
        async fn message(
            &self,
            _cx: &crate::handler::EventContext,
            msg: Message,
        ) -> crate::handler::Outcome<Option<Message>> {
            assert!(msg != text("panic"), "a bug in the host");
            Ok((Some(msg), Vec::new()))
        }
        async fn close(
            &self,
            cx: &crate::handler::EventContext,
            code: u16,
            _reason: &str,
        ) -> crate::handler::Outcome<()> {
            self.0.lock().unwrap().push((cx.conn, code));
            Ok(((), Vec::new()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_connection_task_closes_it_once_and_spares_the_others() {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.outbound_dropped.clone()));
        let store = crate::store::open(&StoreKind::Memory, std::path::Path::new("."), Default::default()).unwrap();
        let hub = Arc::new(Hub::new(registry.clone(), store, Arc::new(LocalBus), metrics, 10));
        let handler = Arc::new(Panics::default());
        let route = Arc::new(Route { path: "/p".into(), handler: handler.clone(), policy: Default::default() });
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let open = |hub: Arc<Hub>, route: Arc<Route>| async move {
            let mut req = crate::handler::OpenRequest::default();
            let admission = hub.admit(&route, peer, None, &mut req).unwrap();
            hub.open(route, admission, req).await.unwrap().conn
        };
        let (a, b) = (open(hub.clone(), route.clone()).await, open(hub.clone(), route.clone()).await);
        let (ida, idb) = (a.id(), b.id());
        // Each connection's task, as a front end runs it.
        let task = tokio::spawn(async move {
            let _ = a.message(text("panic")).await;
            a.close(1000, "").await; // never reached
        });
        assert!(task.await.unwrap_err().is_panic(), "the task panicked");
        assert_eq!(b.message(text("still here")).await.unwrap(), Some(text("still here")), "the other serves on");
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if !handler.0.lock().unwrap().is_empty() && hub.store().connections.get(ida).await.unwrap().is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the panicked connection was closed in the background");
        assert_eq!(*handler.0.lock().unwrap(), [(ida, crate::close::ABNORMAL)], "on-close ran once, with 1006");
        assert!(!registry.close(ida, 1000, ""), "it left the registry");
        b.close(1000, "").await;
        assert_eq!(*handler.0.lock().unwrap(), [(ida, 1006), (idb, 1000)]);
        let again = open(hub.clone(), route).await;
        assert_eq!(again.message(text("new")).await.unwrap(), Some(text("new")), "the hub still opens connections");
        again.close(1000, "").await;
    }
}
