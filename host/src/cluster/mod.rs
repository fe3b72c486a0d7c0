//! Several hosts on one Redis: cross-host delivery, host liveness and the
//! health of the Redis link.
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
//! each publisher's messages arrive in publish order everywhere. One task
//! holds the subscription and reconnects with backoff. One task renews the
//! heartbeat, removes dead hosts' connections ([`RedisStore::reap`]), and
//! writes this host's records back after Redis lost them
//! ([`RedisStore::resync`]).

mod envelope;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use envelope::{Envelope, Malformed};

use crate::conn_id::host_of;
use crate::handler::{ConnId, Effect};
use crate::hub::{Bus, Registry, Unreachable};
use crate::metrics::Metrics;
use crate::store::{Beat, RedisStore, now_ms};

/// Frames waiting for the publisher task; past this they are counted as
/// undelivered.
const OUTBOUND_QUEUE: usize = 65_536;
/// Most frames in one pipelined round trip.
const MAX_BATCH: usize = 512;
/// Longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

const ALL: &str = "wharf:bus:all";

fn host_channel(host: u32) -> String {
    format!("wharf:bus:h:{host}")
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

struct ClusterMetrics {
    redis_up: IntGauge,
    outages: IntCounter,
    hosts: IntGauge,
    sent: IntCounter,
    received: IntCounter,
    undelivered: IntCounterVec,
    reaped: IntCounter,
}

impl ClusterMetrics {
    fn new(metrics: &Metrics) -> Self {
        let m = ClusterMetrics {
            redis_up: IntGauge::new("wharf_redis_up", "1 when Redis answers and this host is subscribed")
                .expect("valid metric"),
            outages: IntCounter::new("wharf_redis_outages_total", "Times Redis became unreachable")
                .expect("valid metric"),
            hosts: IntGauge::new("wharf_cluster_hosts", "Hosts with a live heartbeat, this one included")
                .expect("valid metric"),
            sent: IntCounter::new("wharf_cluster_frames_sent_total", "Frames published to other hosts")
                .expect("valid metric"),
            received: IntCounter::new("wharf_cluster_frames_received_total", "Frames received from other hosts")
                .expect("valid metric"),
            undelivered: IntCounterVec::new(
                Opts::new(
                    "wharf_cluster_undelivered_total",
                    "Cross-host deliveries that did not arrive, by reason (redis_unavailable, host_unreachable, queue_full, gone, malformed)",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            reaped: IntCounter::new(
                "wharf_cluster_reaped_connections_total",
                "Connections of dead hosts removed from presence by this host",
            )
            .expect("valid metric"),
        };
        metrics.register(Box::new(m.redis_up.clone()));
        metrics.register(Box::new(m.outages.clone()));
        metrics.register(Box::new(m.hosts.clone()));
        metrics.register(Box::new(m.sent.clone()));
        metrics.register(Box::new(m.received.clone()));
        metrics.register(Box::new(m.undelivered.clone()));
        metrics.register(Box::new(m.reaped.clone()));
        m
    }
}

enum Target {
    All,
    Host(u32),
}

enum Outgoing {
    Frame {
        target: Target,
        frame: Vec<u8>,
    },
    /// Answered once every frame queued before it was published (or
    /// counted as undelivered).
    Flush(oneshot::Sender<()>),
}

/// (connection, when its client last sent a message) pairs.
type Activity = Vec<(ConnId, u64)>;

/// This host's membership in a group of hosts sharing one Redis.
pub struct Cluster {
    host: u32,
    store: Arc<RedisStore>,
    conn: ConnectionManager,
    out: mpsc::Sender<Outgoing>,
    health: Health,
    metrics: ClusterMetrics,
    /// Stops the tasks; see [`Cluster::stop`].
    stop: CancellationToken,
    /// Questions to other hosts waiting for their answer, by `req`.
    asked: Mutex<HashMap<u64, oneshot::Sender<Activity>>>,
    next_req: AtomicU64,
}

impl Cluster {
    /// Joins the hosts sharing `store`'s Redis at `url`: starts the
    /// publisher, the subscription (which applies other hosts' effects to
    /// `registry`) and the liveness tasks, which run until [`Cluster::stop`].
    pub fn start(
        store: Arc<RedisStore>,
        url: &str,
        heartbeat_ttl: Duration,
        registry: Arc<Registry>,
        metrics: &Metrics,
    ) -> anyhow::Result<Arc<Cluster>> {
        let shutdown = CancellationToken::new();
        let client = redis::Client::open(url)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let health = Health::default();
        health.heartbeat_ok.store(true, Ordering::Release);
        health.live_hosts.store(1, Ordering::Release);
        let cluster = Arc::new(Cluster {
            host: store.host(),
            conn: store.commands(),
            store,
            out: tx,
            health,
            metrics: ClusterMetrics::new(metrics),
            stop: shutdown.clone(),
            asked: Mutex::default(),
            next_req: AtomicU64::new(0),
        });
        cluster.health.set(&cluster.health.subscribed, false);
        let weak = Arc::downgrade(&cluster);
        cluster.store.on_remote_change(move |conn, change| {
            if let Some(c) = weak.upgrade() {
                c.enqueue(Target::Host(host_of(conn)), &Envelope::Record { conn, change });
            }
        });
        tokio::spawn(cluster.clone().publish_loop(rx, shutdown.clone()));
        tokio::spawn(cluster.clone().subscribe_loop(client, registry, shutdown.clone()));
        tokio::spawn(cluster.clone().liveness_loop(heartbeat_ttl, shutdown));
        Ok(cluster)
    }

    /// Publishes what is already queued (the close handlers of a stopping
    /// host may have published), waiting at most two seconds for Redis to
    /// answer, then stops the tasks.
    pub async fn stop(&self) {
        let (tx, flushed) = oneshot::channel();
        let flush = async {
            if self.out.send(Outgoing::Flush(tx)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), flush).await.is_err() {
            tracing::warn!("stopped before Redis took every frame this host had queued for other hosts");
        }
        self.stop.cancel();
    }

    /// The Redis link's state.
    pub fn health_state(&self) -> &Health {
        &self.health
    }

    fn enqueue(&self, target: Target, env: &Envelope) {
        self.enqueue_frame(target, env.encode(self.host));
    }

    fn enqueue_frame(&self, target: Target, frame: Vec<u8>) {
        if self.out.try_send(Outgoing::Frame { target, frame }).is_err() {
            self.metrics.undelivered.with_label_values(&["queue_full"]).inc();
        }
    }

    async fn publish_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>, shutdown: CancellationToken) {
        let mut conn = self.conn.clone();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut frames = Vec::with_capacity(MAX_BATCH);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { return },
            }
            let mut flushed = Vec::new();
            for o in batch.drain(..) {
                match o {
                    Outgoing::Frame { target, frame } => frames.push((target, frame)),
                    Outgoing::Flush(done) => flushed.push(done),
                }
            }
            if !frames.is_empty() {
                self.publish(&mut conn, &frames, &mut failing).await;
                frames.clear();
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Publishes `frames` in one pipelined round trip, counting what no
    /// host received.
    async fn publish(&self, conn: &mut ConnectionManager, frames: &[(Target, Vec<u8>)], failing: &mut bool) {
        let undelivered =
            |reason: &str, n: usize| self.metrics.undelivered.with_label_values(&[reason]).inc_by(n as u64);
        if !self.health.heartbeat_ok.load(Ordering::Acquire) {
            undelivered("redis_unavailable", frames.len());
            return;
        }
        let mut pipe = redis::pipe();
        for (target, frame) in frames {
            match target {
                Target::All => pipe.publish(ALL, frame),
                Target::Host(h) => pipe.publish(host_channel(*h), frame),
            };
        }
        match pipe.query_async::<Vec<i64>>(conn).await {
            Ok(receivers) => {
                *failing = false;
                self.metrics.sent.inc_by(frames.len() as u64);
                // Every live host listens on `all`, this one too when subscribed.
                let subscribed = usize::from(self.health.subscribed.load(Ordering::Acquire));
                let all = self.health.live_hosts() - 1 + subscribed;
                let missing: usize = frames
                    .iter()
                    .zip(receivers)
                    .map(|((target, _), got)| {
                        let want = match target {
                            Target::All => all,
                            Target::Host(_) => 1,
                        };
                        want.saturating_sub(got.max(0) as usize)
                    })
                    .sum();
                if missing > 0 {
                    undelivered("host_unreachable", missing);
                }
            }
            Err(e) => {
                if !*failing {
                    tracing::warn!(error = %e, frames = frames.len(), "could not publish to other hosts; counting what is lost");
                    *failing = true;
                }
                undelivered("redis_unavailable", frames.len());
            }
        }
    }

    async fn subscribe_loop(
        self: Arc<Self>,
        client: redis::Client,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) {
        let mine = host_channel(self.host);
        let mut backoff = Duration::from_millis(100);
        let mut lost_at: Option<Instant> = None;
        loop {
            let attempt = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(ALL).await?;
                ps.subscribe(&mine).await?;
                redis::RedisResult::Ok(ps)
            };
            let ps = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(2), attempt) => r,
            };
            match ps {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(100);
                    if let Some(at) = lost_at.take() {
                        tracing::info!(after_ms = at.elapsed().as_millis() as u64, "receiving from other hosts again");
                    }
                    self.health.set(&self.health.subscribed, true);
                    self.refresh_up();
                    let mut stream = ps.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            msg = stream.next() => msg,
                        };
                        let Some(msg) = msg else { break };
                        self.receive(msg.get_channel_name() == ALL, msg.get_payload_bytes(), &registry);
                    }
                    self.health.set(&self.health.subscribed, false);
                    self.refresh_up();
                    tracing::warn!(
                        "lost the Redis subscription; other hosts' messages do not reach this host until it is back"
                    );
                    lost_at = Some(Instant::now());
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "subscribing to Redis failed"),
                Err(_) => tracing::debug!("subscribing to Redis timed out"),
            }
            lost_at.get_or_insert_with(Instant::now);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn receive(&self, on_all: bool, frame: &[u8], registry: &Registry) {
        match Envelope::decode(frame) {
            Ok((origin, _)) if on_all && origin == self.host => {}
            Ok((_, Envelope::Record { conn, change })) => {
                self.metrics.received.inc();
                self.store.apply_remote_change(conn, &change);
            }
            Ok((origin, Envelope::ActivityQuery { req, conns })) => {
                self.metrics.received.inc();
                let seen = conns.into_iter().filter_map(|id| Some((id, registry.last_active_ms(id)?))).collect();
                self.enqueue(Target::Host(origin), &Envelope::Activity { req, seen });
            }
            Ok((_, Envelope::Activity { req, seen })) => {
                self.metrics.received.inc();
                // No one waits any more when the answer came too late.
                if let Some(asker) = self.asked.lock().unwrap_or_else(|p| p.into_inner()).remove(&req) {
                    let _ = asker.send(seen);
                }
            }
            Ok((_, Envelope::Effect(effect))) => {
                self.metrics.received.inc();
                if !registry.apply(effect) {
                    self.metrics.undelivered.with_label_values(&["gone"]).inc();
                }
            }
            Err(e) => {
                self.metrics.undelivered.with_label_values(&["malformed"]).inc();
                tracing::warn!(error = %e, "ignoring a frame from Redis");
            }
        }
    }

    fn refresh_up(&self) {
        self.metrics.redis_up.set(i64::from(self.health.is_up()));
    }

    async fn liveness_loop(self: Arc<Self>, ttl: Duration, shutdown: CancellationToken) {
        let tick = (ttl / 10).max(Duration::from_millis(100));
        let beat_every = 2;
        let mut n: u64 = 0;
        let mut down_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            n += 1;
            if n.is_multiple_of(beat_every) || down_at.is_some() {
                // A heartbeat that hangs is a failed one: an outage must show
                // within a beat, not after the client's reconnect attempts.
                let beat = tokio::time::timeout(tick * beat_every as u32, self.store.heartbeat()).await;
                let beat = beat.unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "heartbeat timed out",
                    )))
                });
                match beat {
                    Ok(Beat::Taken) => {
                        if !self.health.taken.swap(true, Ordering::AcqRel) {
                            tracing::error!(
                                host = self.host,
                                "another host process holds this host's number (Redis lost its data and handed it out again): connection ids would collide; restart this host"
                            );
                        }
                        self.health.set(&self.health.heartbeat_ok, true);
                    }
                    Ok(beat) => {
                        if let Some(at) = down_at.take() {
                            tracing::info!(after_ms = at.elapsed().as_millis() as u64, "Redis answers again");
                        }
                        self.health.set(&self.health.heartbeat_ok, true);
                        self.store.set_reachable(true);
                        if beat == Beat::Stale {
                            match self.store.resync().await {
                                Ok((written, removed)) => tracing::info!(
                                    written,
                                    removed,
                                    host = self.host,
                                    "wrote this host's connections back to Redis"
                                ),
                                Err(e) => {
                                    tracing::warn!(error = %e, "writing this host's connections back to Redis failed; retrying")
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if down_at.is_none() {
                            tracing::warn!(error = %e, "Redis unreachable: serving this host's connections, counting what cannot reach other hosts, retrying");
                            self.metrics.outages.inc();
                            down_at = Some(Instant::now());
                        }
                        self.health.set(&self.health.heartbeat_ok, false);
                        self.store.set_reachable(false);
                    }
                }
                self.refresh_up();
            }
            if down_at.is_some() {
                continue;
            }
            match self.store.reap().await {
                Ok((live, reaped)) => {
                    self.health.live_hosts.store(live, Ordering::Release);
                    self.metrics.hosts.set(live as i64);
                    for (host, conns) in reaped {
                        tracing::info!(
                            host,
                            connections = conns,
                            "a host stopped renewing its heartbeat; removed its connections"
                        );
                        self.metrics.reaped.inc_by(conns.max(0) as u64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "looking for dead hosts failed"),
            }
        }
    }
}

#[async_trait]
impl Bus for Cluster {
    fn host(&self) -> u32 {
        self.host
    }

    fn is_local(&self, id: ConnId) -> bool {
        host_of(id) == self.host
    }

    fn forward(&self, effect: &Effect) {
        let target = match effect.recipient() {
            Some(id) => Target::Host(host_of(id)),
            None => Target::All,
        };
        self.enqueue_frame(target, envelope::encode_effect(effect, self.host));
    }

    async fn send_now(&self, effect: &Effect) -> Result<bool, Unreachable> {
        let Some(id) = effect.recipient() else { return Err(Unreachable("not an effect on one connection".into())) };
        if !self.health.is_up() {
            return Err(Unreachable("the link to Redis is down".into()));
        }
        let mut conn = self.conn.clone();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(host_channel(host_of(id)))
            .arg(envelope::encode_effect(effect, self.host))
            .query_async(&mut conn)
            .await
            .map_err(|e| Unreachable(format!("redis: {e}")))?;
        self.metrics.sent.inc();
        Ok(receivers > 0)
    }

    async fn activity(&self, host: u32, conns: Vec<ConnId>, wait: Duration) -> Vec<(ConnId, u64)> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, answer) = oneshot::channel();
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).insert(req, tx);
        self.enqueue(Target::Host(host), &Envelope::ActivityQuery { req, conns });
        let answer = tokio::time::timeout(wait, answer).await;
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).remove(&req);
        answer.ok().and_then(Result::ok).unwrap_or_default()
    }

    fn health(&self) -> (bool, Value) {
        let h = &self.health;
        let up = h.is_up();
        (
            up,
            json!({
                "status": if up { "ok" } else { "degraded" },
                "redis": if h.number_taken() { "host number taken" } else if up { "up" } else { "unreachable" },
                "redis_down_since": h.down_since_ms(),
                "host": self.host,
                "hosts": h.live_hosts(),
            }),
        )
    }

    async fn leave(&self) {
        self.stop().await;
        self.store.leave().await;
    }
}
