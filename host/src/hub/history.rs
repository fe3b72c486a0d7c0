//! Channel history in the hub: which channels keep it (the `[[channels]]`
//! rules), publishing to them (kept, then delivered in offset order), and
//! the replays of subscriptions that resume from a position. The runtime
//! reaches it as a [`ChannelHistory`]; the admin API and backends' effects
//! through [`ChannelLog::publish_now`] and [`ChannelLog::queue`].

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Outbound, Registry};
use crate::handler::{ChannelHistory, ConnId, Message};
use crate::history::{Limits, Page, Position, Rules};
use crate::store::{Entry, History, StoreResult};

/// The history of this host's channels, and their rules.
pub struct ChannelLog {
    rules: ArcSwap<Rules>,
    store: Arc<dyn History>,
    registry: Arc<Registry>,
    kept: prometheus::IntCounter,
    failed: prometheus::IntCounter,
    /// Publications applied as effects (a backend's answer), one after
    /// another in the order they were applied.
    queued: OnceLock<mpsc::UnboundedSender<(String, Limits, Message)>>,
}

impl ChannelLog {
    /// The history of `store`'s channels, delivering to `registry`; no
    /// channel keeps any until [`ChannelLog::set_rules`].
    pub fn new(store: Arc<dyn History>, registry: Arc<Registry>, metrics: &crate::metrics::Metrics) -> Self {
        let kept = metrics.history_publications.with_label_values(&["kept"]);
        let failed = metrics.history_publications.with_label_values(&["failed"]);
        ChannelLog {
            rules: ArcSwap::from_pointee(Rules::default()),
            store,
            registry,
            kept,
            failed,
            queued: OnceLock::new(),
        }
    }

    /// Takes the `[[channels]]` rules of a new config.
    pub fn set_rules(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    /// Publishes to `channel` if it keeps history: its position, and how
    /// many of this host's members took it. A channel that keeps none gets
    /// `msg` back, untouched, for the plain fan-out.
    pub async fn publish_now(&self, channel: &str, msg: Message) -> Result<StoreResult<(Position, usize)>, Message> {
        match self.limits(channel) {
            Some(limits) => Ok(self.publish_counted(channel, limits, Entry::Plain(msg)).await),
            None => Err(msg),
        }
    }

    async fn publish_counted(&self, channel: &str, limits: Limits, entry: Entry) -> StoreResult<(Position, usize)> {
        let registry = &self.registry;
        let delivered = std::sync::atomic::AtomicUsize::new(0);
        let deliver = |pos: &Position, msg: &Message| {
            let n = registry.publish_at(channel, pos, &Outbound::from(msg.clone()));
            delivered.store(n, std::sync::atomic::Ordering::Relaxed);
        };
        let r = self.store.append(channel, limits, entry, &deliver).await;
        if r.is_ok() { &self.kept } else { &self.failed }.inc();
        r.map(|pos| (pos, delivered.into_inner()))
    }

    /// Publishes `msg` to `channel`, which keeps `limits`, after every
    /// publication queued before it: how an effect's publish (applied
    /// without waiting) keeps its order.
    pub(super) fn queue(self: &Arc<Self>, channel: String, limits: Limits, msg: Message) {
        let tx = self.queued.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(String, Limits, Message)>();
            let log = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some((channel, limits, msg)) = rx.recv().await {
                    let Some(log) = log.upgrade() else { break };
                    if let Err(e) = log.publish(&channel, limits, Entry::Plain(msg)).await {
                        tracing::warn!(channel, error = %e, "a publication to a channel with history was lost");
                    }
                }
            });
            tx
        });
        let _ = tx.send((channel, limits, msg));
    }
}

#[async_trait]
impl ChannelHistory for ChannelLog {
    fn limits(&self, channel: &str) -> Option<Limits> {
        self.rules.load().limits(channel)
    }

    async fn publish(&self, channel: &str, limits: Limits, entry: Entry) -> StoreResult<Position> {
        self.publish_counted(channel, limits, entry).await.map(|(pos, _)| pos)
    }

    async fn read(&self, channel: &str, limits: Limits, since: Option<&Position>, limit: usize) -> StoreResult<Page> {
        self.store.read(channel, limits, since, limit).await
    }

    fn begin_replay(&self, conn: ConnId, channel: &str) -> bool {
        self.registry.begin_replay(conn, channel)
    }

    fn abandon_replay(&self, conn: ConnId, channel: &str) {
        self.registry.unsubscribe(conn, channel);
    }
}
