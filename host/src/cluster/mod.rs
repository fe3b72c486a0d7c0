//! Several hosts on one Redis: the Redis back end of the store, cross-host
//! delivery (the Redis [`Bus`]), host liveness and the health of the Redis
//! link.
//!
//! Delivery uses Redis pub/sub, not streams. A WebSocket message is
//! ephemeral and only useful to connections open now; pub/sub delivers each
//! PUBLISH once to every subscribed host, in the order one connection
//! published, with one round trip and nothing stored to trim. What streams
//! would add (replay after a host's own link to Redis drops) would deliver
//! stale messages late; instead, what does not arrive is counted: PUBLISH
//! answers how many hosts received it, and a shortfall against the live
//! hosts is `wharf_cluster_undelivered_total`.
//!
//! - `wharf:bus:all` carries publish and broadcast: every host receives it
//!   and delivers to its own members (the sender already delivered locally,
//!   and skips its own frames).
//! - `wharf:bus:h:{host}` carries what is for one connection: emit, close,
//!   subscribe and unsubscribe of a connection held by that host, changes to
//!   its record; and the admin API's question when its connections were last
//!   active, with the answer on the asking host's channel.
//!
//! One task publishes everything a host sends, in order and pipelined, so
//! each publisher's messages arrive in publish order everywhere (`bus.rs`).
//! One task holds the subscription, reconnects with backoff, and applies
//! other hosts' effects to this host's registry. One task renews the
//! heartbeat, removes dead hosts' connections and writes this host's
//! records back after Redis lost them (`liveness.rs`).
//!
//! Each host registers under a number handed out by Redis (`INCR`), which is
//! the high bits of every connection id it makes, so ids are unique across
//! hosts and say which host holds the socket ([`crate::conn_id::host_of`]).
//! The same Redis holds the store ([`RedisStore`], `store.rs`, with the Lua
//! scripts of `scripts.rs`). No `redis` type leaves this module: the rest of
//! the host sees a [`Store`] and a [`Bus`].

mod bus;
mod envelope;
mod history;
mod liveness;
mod scripts;
mod store;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use envelope::{Envelope, Malformed};
pub use store::{RecordChange, RedisStore};

use crate::conn_id::ConnId;
use crate::hub::Registry;
use crate::metrics::{ClusterMetrics, Metrics};
use crate::store::{RecordCaps, Store, now_ms};
use bus::{Outbox, Outgoing};

/// Frames waiting for the publisher task; past this they are counted as
/// undelivered.
const OUTBOUND_QUEUE: usize = 65_536;

/// Checks that `url` is a Redis URL this host can connect to; the error
/// shows it without its password.
pub fn check_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    url.into_connection_info().map(|_| ()).map_err(|e| format!("`{}` is not a Redis URL: {e}", redact(url)))
}

/// `url` without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The state of this host's link to Redis.
#[derive(Default)]
pub struct Health {
    heartbeat_ok: AtomicBool,
    subscribed: AtomicBool,
    /// Another host process holds this host's number.
    taken: AtomicBool,
    /// Unix milliseconds since Redis has been unreachable; 0 while it is up.
    down_since_ms: AtomicU64,
    live_hosts: AtomicUsize,
}

impl Health {
    /// Whether Redis answers and this host receives other hosts' frames.
    pub fn is_up(&self) -> bool {
        self.heartbeat_ok.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire) && !self.number_taken()
    }

    /// Whether another host process holds this host's number (after Redis
    /// lost its data): this host must be restarted.
    pub fn number_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }

    /// Since when (Unix milliseconds) Redis has been unreachable.
    pub fn down_since_ms(&self) -> Option<u64> {
        Some(self.down_since_ms.load(Ordering::Acquire)).filter(|t| *t > 0)
    }

    /// Hosts with a live heartbeat at the last look, this one included.
    pub fn live_hosts(&self) -> usize {
        self.live_hosts.load(Ordering::Acquire).max(1)
    }

    fn set(&self, flag: &AtomicBool, up: bool) {
        flag.store(up, Ordering::Release);
        if self.is_up() {
            self.down_since_ms.store(0, Ordering::Release);
        } else {
            let _ = self.down_since_ms.compare_exchange(0, now_ms(), Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// (connection, when its client last sent a message) pairs.
type Activity = Vec<(ConnId, u64)>;

/// This host's membership in a group of hosts sharing one Redis: its store
/// and its bus.
pub struct Cluster {
    host: u32,
    url: String,
    heartbeat_ttl: Duration,
    store: Arc<RedisStore>,
    conn: ConnectionManager,
    outbox: Outbox,
    /// The publisher's end of the outbox until [`Cluster::start`] takes it.
    outgoing: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    health: Health,
    metrics: ClusterMetrics,
    /// Stops the tasks; see [`Cluster::stop`].
    stop: CancellationToken,
    /// Questions to other hosts waiting for their answer, by `req`.
    asked: Mutex<HashMap<u64, oneshot::Sender<Activity>>>,
    next_req: AtomicU64,
}

impl Cluster {
    /// Connects to the Redis at `url`, takes a host number and registers
    /// this host. Nothing runs until [`Cluster::start`].
    pub async fn connect(
        url: &str,
        heartbeat_ttl: Duration,
        caps: RecordCaps,
        metrics: &Metrics,
    ) -> anyhow::Result<Arc<Cluster>> {
        let metrics = metrics.cluster();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let outbox = Outbox::new(tx, metrics.undelivered.with_label_values(&["queue_full"]));
        let store = Arc::new(RedisStore::connect(url, heartbeat_ttl, caps, outbox.clone()).await?);
        let health = Health::default();
        health.heartbeat_ok.store(true, Ordering::Release);
        health.live_hosts.store(1, Ordering::Release);
        let cluster = Cluster {
            host: store.host(),
            url: url.to_string(),
            heartbeat_ttl,
            conn: store.commands(),
            store,
            outbox,
            outgoing: Mutex::new(Some(rx)),
            health,
            metrics,
            stop: CancellationToken::new(),
            asked: Mutex::default(),
            next_req: AtomicU64::new(0),
        };
        cluster.health.set(&cluster.health.subscribed, false);
        Ok(Arc::new(cluster))
    }

    /// This host's number: the high bits of the connection ids it makes.
    pub fn host(&self) -> u32 {
        self.host
    }

    /// The store every host shares: key/value and connection records in
    /// Redis.
    pub fn store(&self) -> Store {
        Store {
            kv: self.store.clone(),
            connections: self.store.clone(),
            history: self.store.clone(),
            timers: self.store.clone(),
        }
    }

    /// Starts the publisher, the subscription (which applies other hosts'
    /// effects to `registry`) and the liveness tasks, which run until
    /// [`Cluster::stop`]. A second call does nothing.
    pub fn start(self: &Arc<Self>, registry: Arc<Registry>) -> anyhow::Result<()> {
        let Some(rx) = self.outgoing.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let client = redis::Client::open(self.url.as_str())?;
        tokio::spawn(self.clone().publish_loop(rx, self.stop.clone()));
        tokio::spawn(self.clone().subscribe_loop(client, registry, self.stop.clone()));
        tokio::spawn(self.clone().liveness_loop(self.heartbeat_ttl, self.stop.clone()));
        Ok(())
    }

    /// Publishes what is already queued (the close handlers of a stopping
    /// host may have published), waiting at most two seconds for Redis to
    /// answer, then stops the tasks.
    pub async fn stop(&self) {
        if self.outgoing.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            let flush = self.outbox.flush();
            if tokio::time::timeout(Duration::from_secs(2), flush).await.is_err() {
                tracing::warn!("stopped before Redis took every frame this host had queued for other hosts");
            }
        }
        self.stop.cancel();
    }

    fn refresh_up(&self) {
        self.metrics.redis_up.set(i64::from(self.health.is_up()));
    }
}
