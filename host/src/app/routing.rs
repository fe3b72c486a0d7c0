//! Where deliveries go: this host's registry for its own connections, and
//! through the [`Cluster`] to the host that holds any other connection.
//! Handler effects, the admin API's sends and frames from other hosts all
//! pass here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::App;
use crate::cluster::{Cluster, Deliver, Envelope};
use crate::events::{ConnId, Effect, host_of};
use crate::server::{Delivery, Registry, Router, from_ws, to_ws};

/// How long the admin API waits for another host to say when its
/// connections were last active.
const ACTIVITY_WAIT: Duration = Duration::from_millis(500);

impl App {
    fn is_local(&self, id: ConnId) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_local(id))
    }

    /// Applies what a handler asked for, in order.
    pub(super) fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            self.apply_one(effect);
        }
    }

    fn apply_one(&self, effect: Effect) {
        let cluster = self.cluster.as_deref();
        match effect {
            Effect::Emit { to, msg } => match cluster {
                Some(c) if !c.is_local(to) => c.to_holder(to, &Envelope::Emit { to, msg }),
                _ => {
                    self.registry.send(to, to_ws(msg));
                }
            },
            Effect::Broadcast { route, msg, except } => {
                if let Some(c) = cluster {
                    c.to_all(&Envelope::Broadcast { route: route.to_string(), msg: msg.clone(), except });
                }
                self.registry.broadcast(&route, &to_ws(msg), except);
            }
            Effect::Publish { channel, msg } => {
                if let Some(c) = cluster {
                    c.to_all(&Envelope::Publish { channel: channel.clone(), msg: msg.clone() });
                }
                self.registry.publish(&channel, &to_ws(msg));
            }
            Effect::Subscribe { conn, channel } => match cluster {
                Some(c) if !c.is_local(conn) => c.to_holder(conn, &Envelope::Subscribe { conn, channel }),
                _ => {
                    self.registry.subscribe(conn, &channel);
                }
            },
            Effect::Unsubscribe { conn, channel } => match cluster {
                Some(c) if !c.is_local(conn) => c.to_holder(conn, &Envelope::Unsubscribe { conn, channel }),
                _ => self.registry.unsubscribe(conn, &channel),
            },
            Effect::Close { conn, code, reason } => match cluster {
                Some(c) if !c.is_local(conn) => c.to_holder(conn, &Envelope::Close { conn, code, reason }),
                _ => {
                    self.registry.close(conn, code, &reason);
                }
            },
        }
    }

    /// Sends `env` to the host holding connection `id`, if any host does.
    async fn to_remote(&self, cluster: &Cluster, id: ConnId, env: Envelope) -> Delivery {
        match self.store.connection_plugin(id).await {
            Ok(None) => return Delivery::Gone,
            Ok(Some(_)) => {}
            Err(_) => return Delivery::Unreachable,
        }
        match cluster.send_now(id, &env).await {
            Ok(true) => Delivery::Queued,
            Ok(false) => Delivery::Gone,
            Err(e) => {
                tracing::warn!(conn = id, error = %e, "admin API: could not reach the connection's host");
                Delivery::Unreachable
            }
        }
    }
}

/// Frames from other hosts, applied to this host's registry.
pub(super) struct ToRegistry(pub Arc<Registry>);

impl Deliver for ToRegistry {
    fn deliver(&self, env: Envelope) -> bool {
        let r = &self.0;
        match env {
            Envelope::Publish { channel, msg } => {
                r.publish(&channel, &to_ws(msg));
                true
            }
            Envelope::Broadcast { route, msg, except } => {
                r.broadcast(&route, &to_ws(msg), except);
                true
            }
            Envelope::Emit { to, msg } => r.send(to, to_ws(msg)) != Delivery::Gone,
            Envelope::Close { conn, code, reason } => r.close(conn, code, &reason),
            Envelope::Subscribe { conn, channel } => r.subscribe(conn, &channel),
            Envelope::Unsubscribe { conn, channel } => {
                r.unsubscribe(conn, &channel);
                true
            }
            // The cluster handles these itself.
            Envelope::Record { .. } | Envelope::ActivityQuery { .. } | Envelope::Activity { .. } => true,
        }
    }

    fn last_active_ms(&self, id: ConnId) -> Option<u64> {
        self.0.last_active_ms(id)
    }
}

/// The admin API's sends.
pub(super) struct AdminRouter(pub Arc<App>);

#[async_trait::async_trait]
impl Router for AdminRouter {
    async fn send(&self, id: ConnId, msg: WsMessage) -> Delivery {
        let app = &self.0;
        match app.cluster.as_deref() {
            Some(c) if !app.is_local(id) => {
                let Some(msg) = from_ws(&msg) else { return Delivery::Gone };
                app.to_remote(c, id, Envelope::Emit { to: id, msg }).await
            }
            _ => app.registry.send(id, msg),
        }
    }

    async fn close(&self, id: ConnId, code: u16, reason: &str) -> Delivery {
        let app = &self.0;
        match app.cluster.as_deref() {
            Some(c) if !app.is_local(id) => {
                app.to_remote(c, id, Envelope::Close { conn: id, code, reason: reason.to_string() }).await
            }
            _ if app.registry.close(id, code, reason) => Delivery::Queued,
            _ => Delivery::Gone,
        }
    }

    async fn last_active(&self, ids: &[ConnId]) -> HashMap<ConnId, u64> {
        let app = &self.0;
        let mut seen = HashMap::new();
        let mut remote: BTreeMap<u32, Vec<ConnId>> = BTreeMap::new();
        for &id in ids {
            if app.is_local(id) {
                seen.extend(app.registry.last_active_ms(id).map(|at| (id, at)));
            } else {
                remote.entry(host_of(id)).or_default().push(id);
            }
        }
        if let Some(c) = app.cluster.as_deref() {
            let asked = remote.into_iter().map(|(host, conns)| c.activity(host, conns, ACTIVITY_WAIT));
            seen.extend(futures_util::future::join_all(asked).await.into_iter().flatten());
        }
        seen
    }

    fn publish(&self, channel: &str, msg: &WsMessage) -> usize {
        let app = &self.0;
        if let (Some(c), Some(m)) = (app.cluster.as_deref(), from_ws(msg)) {
            c.to_all(&Envelope::Publish { channel: channel.to_string(), msg: m });
        }
        app.registry.publish(channel, msg)
    }

    fn health(&self) -> (bool, Value) {
        let Some(c) = self.0.cluster.as_deref() else {
            return (true, json!({ "status": "ok" }));
        };
        let h = c.health();
        let up = h.is_up();
        (
            up,
            json!({
                "status": if up { "ok" } else { "degraded" },
                "redis": if h.number_taken() { "host number taken" } else if up { "up" } else { "unreachable" },
                "redis_down_since": h.down_since_ms(),
                "host": c.host(),
                "hosts": h.live_hosts(),
            }),
        )
    }
}
