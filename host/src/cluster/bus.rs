//! The Redis bus: the outbox every frame for other hosts goes through, the
//! publisher task that pipelines it to Redis in order, the subscription
//! task that applies other hosts' frames to this host's registry, and the
//! [`Bus`] the hub sends through.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use prometheus::IntCounter;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::envelope::{self, Envelope};
use crate::conn_id::host_of;
use crate::handler::{ConnId, Effect};
use crate::hub::{Bus, Registry, Unreachable};

/// Most frames in one pipelined round trip.
const MAX_BATCH: usize = 512;
/// Longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(super) const ALL: &str = "wharf:bus:all";

fn host_channel(host: u32) -> String {
    format!("wharf:bus:h:{host}")
}

/// Where a frame goes.
pub(super) enum Target {
    /// Every host.
    All,
    /// The host with this number.
    Host(u32),
}

pub(super) enum Outgoing {
    Frame {
        target: Target,
        frame: Vec<u8>,
    },
    /// Answered once every frame queued before it was published (or
    /// counted as undelivered).
    Flush(oneshot::Sender<()>),
}

/// The queue of frames for other hosts, in the order they were pushed;
/// shared by the bus and the store (which tells a connection's holder of
/// changes to its record).
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    queue_full: IntCounter,
}

impl Outbox {
    pub fn new(tx: mpsc::Sender<Outgoing>, queue_full: IntCounter) -> Self {
        Outbox { tx, queue_full }
    }

    /// Queues a frame without waiting; a full queue counts it as lost.
    pub fn push(&self, target: Target, frame: Vec<u8>) {
        if self.tx.try_send(Outgoing::Frame { target, frame }).is_err() {
            self.queue_full.inc();
        }
    }

    /// Resolves once every frame queued before it is published.
    pub async fn flush(&self) {
        let (tx, flushed) = oneshot::channel();
        if self.tx.send(Outgoing::Flush(tx)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

impl Cluster {
    fn enqueue(&self, target: Target, env: &Envelope) {
        self.outbox.push(target, env.encode(self.host));
    }

    pub(super) async fn publish_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>, shutdown: CancellationToken) {
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

    pub(super) async fn subscribe_loop(
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
            Ok((_, Envelope::Recorded { channel, pos, msg })) => {
                self.metrics.received.inc();
                registry.publish_at(&channel, &pos, &msg.into());
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
}

#[async_trait]
impl Bus for Cluster {
    fn is_local(&self, id: ConnId) -> bool {
        host_of(id) == self.host
    }

    fn forward(&self, effect: &Effect) {
        let target = match effect.recipient() {
            Some(id) => Target::Host(host_of(id)),
            None => Target::All,
        };
        self.outbox.push(target, envelope::encode_effect(effect, self.host));
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
