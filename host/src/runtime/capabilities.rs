//! The host side of the WIT imports (version 0.2.0; 0.1.0's are served by
//! these through `compat.rs`): thin adapters that check arguments and caps,
//! then delegate to the store, the channel history, or record an
//! [`Effect`].

use std::time::{Duration, Instant};

use std::sync::Arc;

use super::bindings::v2::types::{Error, LogLevel};
use super::bindings::v2::{channels, connections, kv, logging, pipeline, timers, types};
use super::state::{InstanceState, PluginEnv};
use crate::close;
use crate::handler::{ConnId, Effect, Message};
use crate::history;
use crate::store::{Entry, StoreError, StoreResult};

/// Longest key accepted by the key/value and metadata imports.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Longest channel name.
const MAX_CHANNEL_BYTES: usize = 256;
/// Bytes of `log` lines one event may write to the host log; past it the
/// event's further lines are dropped and counted.
pub(crate) const MAX_LOG_BYTES_PER_EVENT: usize = 64 << 10;
/// Most keys one `list-keys` call returns.
const MAX_LIST: u32 = 1000;
/// Most ids one `members` call returns.
const MAX_MEMBERS: usize = 10_000;
/// What a stamp adds to a message at most: the two fields, a 20-digit
/// offset and a 16-digit epoch.
const STAMP_BYTES: usize = 64;

/// The one place store errors become guest-visible errors.
fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::UnknownConnection => Error::UnknownConnection,
        StoreError::NotACounter => Error::InvalidArgument,
        StoreError::QuotaExceeded => Error::QuotaExceeded,
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable during a handler call");
            Error::Unavailable
        }
    }
}

pub(crate) fn to_message(m: types::Message) -> Message {
    match m {
        types::Message::Text(t) => Message::Text(t),
        types::Message::Binary(b) => Message::Binary(b),
    }
}

pub(crate) fn from_message(m: Message) -> types::Message {
    match m {
        Message::Text(t) => types::Message::Text(t),
        Message::Binary(b) => types::Message::Binary(b),
    }
}

fn to_position(p: types::Position) -> history::Position {
    history::Position { offset: p.offset, epoch: Arc::from(p.epoch) }
}

fn from_position(p: history::Position) -> types::Position {
    types::Position { offset: p.offset, epoch: p.epoch.to_string() }
}

fn from_page(page: history::Page) -> types::HistoryPage {
    types::HistoryPage {
        publications: page
            .publications
            .into_iter()
            .map(|p| types::Publication { offset: p.offset, msg: from_message(p.msg) })
            .collect(),
        latest: from_position(page.latest),
        recovered: page.recovered,
    }
}

impl InstanceState {
    fn push(&mut self, effect: Effect) -> Result<(), Error> {
        self.room_for_effect()?;
        self.call.effects.push(effect);
        Ok(())
    }

    fn room_for_effect(&self) -> Result<(), Error> {
        if self.call.effects.len() >= self.env.caps.max_effects { Err(Error::QuotaExceeded) } else { Ok(()) }
    }

    /// Counts one outgoing message against the event's caps.
    fn spend_message(&mut self, m: &types::Message) -> Result<(), Error> {
        let len = match m {
            types::Message::Text(t) => t.len(),
            types::Message::Binary(b) => b.len(),
        };
        self.spend_message_bytes(len)
    }

    /// Counts one outgoing message of `len` bytes against the event's caps.
    fn spend_message_bytes(&mut self, len: usize) -> Result<(), Error> {
        let caps = &self.env.caps;
        if len > caps.max_message_bytes {
            return Err(Error::TooLarge);
        }
        let call = &mut self.call;
        if call.messages >= caps.max_messages || call.bytes + len > caps.max_bytes {
            return Err(Error::QuotaExceeded);
        }
        call.messages += 1;
        call.bytes += len;
        Ok(())
    }

    /// Counts one store operation against the event's caps.
    fn spend_store_op(&mut self) -> Result<(), Error> {
        if self.call.store_ops >= self.env.caps.max_store_ops {
            return Err(Error::QuotaExceeded);
        }
        self.call.store_ops += 1;
        Ok(())
    }

    fn check_value(&self, len: usize) -> Result<(), Error> {
        if len > self.env.caps.max_value_bytes { Err(Error::TooLarge) } else { Ok(()) }
    }
}

impl PluginEnv {
    /// Runs a store operation within the event's deadline, recording its
    /// latency and failures; maps its error for the guest. One still waiting
    /// at the deadline answers `unavailable` then (and one made after it at
    /// once), so a stalled store cannot hold an event past its time.
    async fn timed<T>(
        &self,
        deadline: tokio::time::Instant,
        op: &'static str,
        f: impl Future<Output = StoreResult<T>>,
    ) -> Result<T, Error> {
        let env = self;
        let started = Instant::now();
        let r = match tokio::time::timeout_at(deadline, f).await {
            Ok(r) => r,
            Err(_) => {
                env.metrics.store_errors.with_label_values(&[op]).inc();
                tracing::warn!(plugin = %env.name, op, "a store operation was still waiting at the event's deadline");
                return Err(Error::Unavailable);
            }
        };
        env.metrics.store_seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            env.metrics.store_errors.with_label_values(&[op]).inc();
        }
        r.map_err(store_error)
    }

    /// A connection this plugin may act on: open, and served by this plugin.
    /// Another plugin's connection answers `unknown-connection` too, so that
    /// a handler cannot tell which foreign ids are live.
    async fn own_connection(&self, deadline: tokio::time::Instant, conn: ConnId) -> Result<(), Error> {
        match self.timed(deadline, "connection_plugin", self.store.connections.plugin(conn)).await? {
            // A route's handler graph records every handler's name.
            Some(p) if p.split(',').any(|n| n == &*self.name) => Ok(()),
            _ => Err(Error::UnknownConnection),
        }
    }

    /// The host's name for this plugin's channel `name`, once it is checked.
    fn channel(&self, name: &str) -> Result<String, Error> {
        check_channel(name)?;
        Ok(crate::channel::qualified(&self.channel_namespace, name))
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES { Err(Error::TooLarge) } else { Ok(()) }
}

fn check_channel(channel: &str) -> Result<(), Error> {
    match channel.len() {
        0 => Err(Error::InvalidArgument),
        n if n > MAX_CHANNEL_BYTES => Err(Error::TooLarge),
        _ => Ok(()),
    }
}

impl types::Host for InstanceState {}

impl connections::Host for InstanceState {
    async fn emit(&mut self, conn: ConnId, msg: types::Message) -> Result<(), Error> {
        let env = self.env.clone();
        self.spend_message(&msg)?;
        env.own_connection(self.call.deadline, conn).await?;
        self.push(Effect::Emit { to: conn, msg: to_message(msg) })
    }

    async fn close(&mut self, conn: ConnId, code: u16, reason: String) -> Result<(), Error> {
        let env = self.env.clone();
        match close::check_request(code, &reason) {
            Ok(()) => {}
            Err(close::Refusal::Code) => return Err(Error::InvalidArgument),
            Err(close::Refusal::ReasonTooLong) => return Err(Error::TooLarge),
        }
        env.own_connection(self.call.deadline, conn).await?;
        self.push(Effect::Close { conn, code, reason })
    }

    async fn get_metadata(&mut self, conn: ConnId, key: String) -> Result<Option<String>, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        env.own_connection(self.call.deadline, conn).await?;
        env.timed(self.call.deadline, "metadata_get", env.store.connections.metadata_get(conn, &key)).await
    }

    async fn set_metadata(&mut self, conn: ConnId, key: String, value: String) -> Result<(), Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        self.check_value(value.len())?;
        env.own_connection(self.call.deadline, conn).await?;
        env.timed(self.call.deadline, "metadata_set", env.store.connections.metadata_set(conn, &key, &value)).await
    }

    async fn info(&mut self, conn: ConnId) -> Result<types::ConnectionInfo, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        env.own_connection(self.call.deadline, conn).await?;
        let record = env
            .timed(self.call.deadline, "connection", env.store.connections.get(conn))
            .await?
            .ok_or(Error::UnknownConnection)?;
        Ok(types::ConnectionInfo {
            id: record.id,
            route: record.route.to_string(),
            metadata: record.metadata,
            channels: record.channels.iter().map(|c| crate::channel::name(c).to_string()).collect(),
        })
    }

    async fn delete_metadata(&mut self, conn: ConnId, key: String) -> Result<(), Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        env.own_connection(self.call.deadline, conn).await?;
        env.timed(self.call.deadline, "metadata_delete", env.store.connections.metadata_delete(conn, &key)).await
    }
}

impl channels::Host for InstanceState {
    async fn broadcast(&mut self, msg: types::Message, except: Option<ConnId>) -> Result<(), Error> {
        self.spend_message(&msg)?;
        let route = self.call.route.clone();
        self.push(Effect::Broadcast { route, msg: to_message(msg), except })
    }

    async fn subscribe(
        &mut self,
        conn: ConnId,
        channel: String,
        since: Option<types::Position>,
    ) -> Result<types::Subscribed, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        env.own_connection(self.call.deadline, conn).await?;
        self.room_for_effect()?;
        // Presence changes now; delivery starts when the effect is applied.
        env.timed(self.call.deadline, "channel_subscribe", env.store.connections.subscribe(conn, &channel)).await?;
        let live = types::Subscribed { recovered: since.is_none(), replayed: 0, latest: None };
        let Some(limits) = env.history.limits(&channel) else {
            self.push(Effect::Subscribe { conn, channel })?;
            return Ok(live);
        };
        // A channel with history always joins through a replay, so that
        // the position answered is exact: every later publication reaches
        // the connection, none twice.
        if !env.history.begin_replay(conn, &channel) {
            self.push(Effect::Subscribe { conn, channel })?;
            return Ok(types::Subscribed { recovered: false, ..live });
        }
        let since = since.map(to_position);
        let read = env.history.read(&channel, limits, since.as_ref(), if since.is_some() { limits.size } else { 0 });
        let page = match env.timed(self.call.deadline, "history_read", read).await {
            Ok(page) => page,
            Err(e) => {
                crate::handler::ChannelHistory::abandon_replay(&*env.history, conn, &channel);
                return Err(e);
            }
        };
        let answer = types::Subscribed {
            recovered: page.recovered,
            replayed: page.publications.len() as u32,
            latest: Some(from_position(page.latest.clone())),
        };
        let since = since.or_else(|| Some(page.latest.clone()));
        self.push(Effect::Resume { conn, channel, since, page: Arc::new(page) })?;
        Ok(answer)
    }

    async fn unsubscribe(&mut self, conn: ConnId, channel: String) -> Result<(), Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        env.own_connection(self.call.deadline, conn).await?;
        env.timed(self.call.deadline, "channel_unsubscribe", env.store.connections.unsubscribe(conn, &channel)).await?;
        self.push(Effect::Unsubscribe { conn, channel })
    }

    async fn members(&mut self, channel: String) -> Result<Vec<ConnId>, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        let mut ids = env.timed(self.call.deadline, "channel_members", env.store.connections.members(&channel)).await?;
        ids.truncate(MAX_MEMBERS);
        Ok(ids)
    }

    async fn publish(&mut self, channel: String, msg: types::Message) -> Result<Option<types::Position>, Error> {
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        self.spend_message(&msg)?;
        let Some(limits) = env.history.limits(&channel) else {
            self.push(Effect::Publish { channel, msg: to_message(msg) })?;
            return Ok(None);
        };
        self.spend_store_op()?;
        let publish = env.history.publish(&channel, limits, Entry::Plain(to_message(msg)));
        Ok(Some(from_position(env.timed(self.call.deadline, "history_publish", publish).await?)))
    }

    async fn publish_stamped(&mut self, channel: String, json: String) -> Result<types::Position, Error> {
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        let limits = env.history.limits(&channel).ok_or(Error::NotAllowed)?;
        self.spend_message_bytes(json.len() + STAMP_BYTES)?;
        let body = history::object_body(&json).map_err(|_| Error::InvalidArgument)?;
        self.spend_store_op()?;
        let publish = env.history.publish(&channel, limits, Entry::Stamped(body.to_string()));
        Ok(from_position(env.timed(self.call.deadline, "history_publish", publish).await?))
    }

    async fn history(
        &mut self,
        channel: String,
        since: Option<types::Position>,
        limit: u32,
    ) -> Result<types::HistoryPage, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        let channel = env.channel(&channel)?;
        let Some(limits) = env.history.limits(&channel) else {
            let latest = types::Position { offset: 0, epoch: String::new() };
            return Ok(types::HistoryPage { publications: Vec::new(), latest, recovered: since.is_none() });
        };
        let since = since.map(to_position);
        let limit = (limit as usize).min(history::MAX_READ);
        let read = env.history.read(&channel, limits, since.as_ref(), limit);
        Ok(from_page(env.timed(self.call.deadline, "history_read", read).await?))
    }
}

impl kv::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        env.timed(self.call.deadline, "kv_get", env.store.kv.get(&env.namespace, &key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        self.check_value(value.len())?;
        let ttl = ttl_ms.map(Duration::from_millis);
        env.timed(self.call.deadline, "kv_set", env.store.kv.set(&env.namespace, &key, value, ttl)).await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        env.timed(self.call.deadline, "kv_delete", env.store.kv.delete(&env.namespace, &key)).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        env.timed(self.call.deadline, "kv_increment", env.store.kv.increment(&env.namespace, &key, delta)).await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&key)?;
        self.check_value(value.len())?;
        let ns = &env.namespace;
        env.timed(
            self.call.deadline,
            "kv_compare_and_swap",
            env.store.kv.compare_and_swap(ns, &key, expected.as_deref(), value),
        )
        .await
    }

    async fn list_keys(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> Result<Vec<String>, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_key(&prefix)?;
        let limit = limit.min(MAX_LIST) as usize;
        let ns = &env.namespace;
        env.timed(self.call.deadline, "kv_list_keys", env.store.kv.list_keys(ns, &prefix, cursor.as_deref(), limit))
            .await
    }
}

impl pipeline::Host for InstanceState {
    async fn forward(&mut self, handler: String, msg: types::Message) -> Result<(), Error> {
        let env = self.env.clone();
        if !self.call.forwardable || self.call.handlers.forward(&env.name, &handler).is_none() {
            return Err(Error::NotAllowed);
        }
        self.spend_message(&msg)?;
        self.room_for_effect()?;
        let conn = self.call.conn;
        self.push(Effect::Forward { conn, from: env.name.clone(), handler, msg: to_message(msg) })
    }
}

fn from_timer(t: crate::store::Timer) -> timers::Timer {
    timers::Timer { name: t.name, due_unix_ms: t.due_ms, payload: t.payload, attempts: t.attempts }
}

fn check_timer_name(name: &str) -> Result<(), Error> {
    match name.len() {
        0 => Err(Error::InvalidArgument),
        n if n > MAX_KEY_BYTES => Err(Error::TooLarge),
        _ => Ok(()),
    }
}

impl timers::Host for InstanceState {
    async fn set(&mut self, name: String, when: timers::When, payload: Vec<u8>) -> Result<(), Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        if !env.on_timer {
            return Err(Error::NotAllowed);
        }
        check_timer_name(&name)?;
        self.check_value(payload.len())?;
        let now = env.clock.now_ms();
        // At most a century ahead, as for key/value TTLs.
        let latest = now.saturating_add(crate::store::MAX_TTL.as_millis() as u64);
        let due_ms = match when {
            timers::When::AfterMs(ms) => now.saturating_add(ms),
            timers::When::AtUnixMs(at) => at,
        }
        .min(latest);
        let route = self.call.route.clone();
        let timer = crate::store::Timer {
            name,
            due_ms,
            payload,
            route,
            attempts: 0,
            version: crate::store::timers::new_version(),
        };
        let set = env.store.timers.set_later(&env.name, timer, env.caps.max_timers);
        // Durable before the event ends (`Call::unwritten`), not before
        // this call returns: a handler setting many waits for the disk once.
        let written = env.timed(self.call.deadline, "timer_set", set).await?;
        self.call.unwritten.push(written);
        Ok(())
    }

    async fn cancel(&mut self, name: String) -> Result<bool, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_timer_name(&name)?;
        let cancel = env.store.timers.cancel_later(&env.name, &name);
        let (found, written) = env.timed(self.call.deadline, "timer_cancel", cancel).await?;
        self.call.unwritten.push(written);
        Ok(found)
    }

    async fn get(&mut self, name: String) -> Result<Option<timers::Timer>, Error> {
        self.spend_store_op()?;
        let env = self.env.clone();
        check_timer_name(&name)?;
        let timer = env.timed(self.call.deadline, "timer_get", env.store.timers.get(&env.name, &name)).await?;
        Ok(timer.map(from_timer))
    }
}

/// The part of a `log` line the host writes: at most
/// [`super::guest_output::MAX_LINE`] bytes, cut at a character boundary and
/// marked when cut.
fn fit_log_line(text: &str) -> std::borrow::Cow<'_, str> {
    let max = super::guest_output::MAX_LINE;
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes, cut)", &text[..end], text.len()).into()
}

impl logging::Host for InstanceState {
    async fn log(&mut self, level: LogLevel, text: String) {
        let (plugin, conn) = (&*self.env.name, self.call.conn);
        let line = fit_log_line(&text);
        if self.call.log_bytes + line.len() > MAX_LOG_BYTES_PER_EVENT {
            if self.call.log_bytes <= MAX_LOG_BYTES_PER_EVENT {
                // Once per event: say so, then drop silently (counted).
                self.call.log_bytes = MAX_LOG_BYTES_PER_EVENT + 1;
                tracing::warn!(target: "wharf::guest", plugin, conn, "the event's log budget ({MAX_LOG_BYTES_PER_EVENT} bytes) is spent; its further lines are dropped");
            }
            self.env.metrics.guest_log_dropped.with_label_values(&[plugin]).inc();
            return;
        }
        self.call.log_bytes += line.len();
        match level {
            LogLevel::Trace => tracing::trace!(target: "wharf::guest", plugin, conn, "{line}"),
            LogLevel::Debug => tracing::debug!(target: "wharf::guest", plugin, conn, "{line}"),
            LogLevel::Info => tracing::info!(target: "wharf::guest", plugin, conn, "{line}"),
            LogLevel::Warn => tracing::warn!(target: "wharf::guest", plugin, conn, "{line}"),
            LogLevel::Error => tracing::error!(target: "wharf::guest", plugin, conn, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The trust boundary without Wasm: each import's checks of sizes,
    //! close codes, ownership and the per-event caps, called as a guest
    //! would call them.

    use std::sync::Arc;

    use super::*;
    use crate::handler::{EventContext, RouteHandlers};
    use crate::metrics::Metrics;
    use crate::runtime::EventCaps;
    use crate::store::{ConnectionRecord, Store, StoreKind};

    const MINE: ConnId = 1;
    const THEIRS: ConnId = 2;
    const NOBODY: ConnId = 99;

    fn caps() -> EventCaps {
        EventCaps {
            max_message_bytes: 16,
            max_messages: 3,
            max_bytes: 40,
            max_store_ops: 4,
            max_value_bytes: 8,
            max_effects: 5,
            deadline_ticks: 1,
            memory_bytes: 1 << 20,
            max_timers: 2,
        }
    }

    fn record(id: ConnId, plugin: &str) -> ConnectionRecord {
        ConnectionRecord {
            id,
            route: "/r".into(),
            plugin: plugin.into(),
            remote_addr: String::new(),
            connected_at_ms: 0,
            metadata: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// An instance's state for plugin `p` during an event of connection
    /// [`MINE`]; [`THEIRS`] belongs to plugin `q`.
    async fn state(caps: EventCaps) -> InstanceState {
        let store: Store =
            crate::store::open(&StoreKind::Memory, std::path::Path::new("."), Default::default()).unwrap();
        store.connections.open(record(MINE, "p")).await.unwrap();
        store.connections.open(record(THEIRS, "q")).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let budget = Arc::new(crate::runtime::MemoryBudget::new(1 << 30, metrics.instance_memory_bytes.clone()));
        let env = PluginEnv {
            name: Arc::from("p"),
            namespace: "p".into(),
            channel_namespace: "p".into(),
            history: history_of(&store, &metrics, Default::default()),
            store,
            caps,
            metrics,
            budget,
            pool_growth_bytes: 4 << 20,
            language: crate::runtime::GuestLanguage::Compiled,
            clock: crate::clock::Clock::manual(1_000_000),
            on_timer: true,
        };
        let mut s = InstanceState::new(Arc::new(env));
        begin(&mut s, Duration::from_secs(60));
        s
    }

    /// `pipeline.forward` of a 3-byte text to `to`.
    async fn forward(s: &mut InstanceState, to: &str) -> Result<(), Error> {
        pipeline::Host::forward(s, to.to_string(), text(3)).await
    }

    /// Starts an event on `MINE`, on a route of `p` alone, whose host
    /// calls have `budget`.
    fn begin(s: &mut InstanceState, budget: Duration) {
        let handlers = Arc::new(RouteHandlers::one(Arc::from("p")));
        s.call.begin(&EventContext::new(MINE, Arc::from("/r"), handlers), tokio::time::Instant::now() + budget, 1000);
    }

    /// `subscribe` without a position, its answer left out.
    async fn subscribe(s: &mut InstanceState, conn: ConnId, channel: String) -> Result<(), Error> {
        channels::Host::subscribe(s, conn, channel, None).await.map(drop)
    }

    /// `publish`, its position left out.
    async fn publish(s: &mut InstanceState, channel: String, msg: types::Message) -> Result<(), Error> {
        channels::Host::publish(s, channel, msg).await.map(drop)
    }

    /// The hub's channel history over `store`, with `rules`.
    fn history_of(
        store: &Store,
        metrics: &Metrics,
        rules: crate::history::Rules,
    ) -> Arc<dyn crate::handler::ChannelHistory> {
        let registry = Arc::new(crate::hub::Registry::new(metrics.outbound_dropped.clone()));
        // The registry's first id is MINE: this host's connection.
        let queue = crate::hub::QueuePolicy { capacity: 8, max_bytes: 1 << 20, slow_reader: Default::default() };
        assert_eq!(registry.reserve("/r".into(), queue).0, MINE);
        let log = crate::hub::ChannelLog::new(store.history.clone(), registry, metrics);
        log.set_rules(rules);
        Arc::new(log)
    }

    fn text(n: usize) -> types::Message {
        types::Message::Text("x".repeat(n))
    }

    #[tokio::test]
    async fn close_takes_only_requestable_codes_and_short_reasons() {
        let mut s = state(caps()).await;
        async fn close(s: &mut InstanceState, code: u16, reason: &str) -> Result<(), Error> {
            connections::Host::close(s, MINE, code, reason.to_string()).await
        }
        assert_eq!(close(&mut s, 1011, "").await, Err(Error::InvalidArgument), "1011 is the host's");
        assert_eq!(close(&mut s, 1001, "").await, Err(Error::InvalidArgument));
        assert_eq!(close(&mut s, 2999, "").await, Err(Error::InvalidArgument));
        assert_eq!(close(&mut s, 4000, &"r".repeat(124)).await, Err(Error::TooLarge));
        assert!(s.call.effects.is_empty(), "a refused close asks for nothing");
        assert_eq!(close(&mut s, 4000, &"r".repeat(123)).await, Ok(()));
        assert_eq!(close(&mut s, 1000, "bye").await, Ok(()));
        assert_eq!(s.call.effects.len(), 2);
        assert!(matches!(&s.call.effects[1], Effect::Close { conn: MINE, code: 1000, reason } if reason == "bye"));
    }

    #[tokio::test]
    async fn a_plugin_acts_only_on_its_own_connections_and_cannot_tell_others_from_none() {
        let mut s = state(caps()).await;
        for id in [THEIRS, NOBODY] {
            assert_eq!(connections::Host::emit(&mut s, id, text(1)).await, Err(Error::UnknownConnection));
            assert_eq!(connections::Host::close(&mut s, id, 1000, String::new()).await, Err(Error::UnknownConnection));
            s.call.store_ops = 0;
            let got = connections::Host::get_metadata(&mut s, id, "k".into()).await;
            assert_eq!(got, Err(Error::UnknownConnection));
            assert_eq!(connections::Host::info(&mut s, id).await.map(|i| i.id), Err(Error::UnknownConnection));
            let sub = subscribe(&mut s, id, "room".into()).await;
            assert_eq!(sub, Err(Error::UnknownConnection));
        }
        assert!(s.call.effects.is_empty());
        assert_eq!(connections::Host::emit(&mut s, MINE, text(1)).await, Ok(()));
        assert_eq!(s.call.effects, [Effect::Emit { to: MINE, msg: Message::Text("x".into()) }]);
    }

    #[tokio::test]
    async fn channel_names_are_in_the_plugins_namespace() {
        let mut s = state(caps()).await;
        // Plugin q's connection is in q's `room`; p's `room` is another channel.
        s.env.store.connections.subscribe(THEIRS, &crate::channel::qualified("q", "room")).await.unwrap();
        assert_eq!(channels::Host::members(&mut s, "room".into()).await, Ok(vec![]));
        assert_eq!(subscribe(&mut s, MINE, "room".into()).await, Ok(()));
        assert_eq!(channels::Host::members(&mut s, "room".into()).await, Ok(vec![MINE]));
        assert_eq!(publish(&mut s, "room".into(), text(1)).await, Ok(()));
        let qualified = "p:room".to_string();
        assert_eq!(
            s.call.effects,
            [
                Effect::Subscribe { conn: MINE, channel: qualified.clone() },
                Effect::Publish { channel: qualified.clone(), msg: Message::Text("x".into()) },
            ]
        );
        assert_eq!(s.env.store.connections.members(&qualified).await.unwrap(), [MINE]);
        let info = connections::Host::info(&mut s, MINE).await.unwrap();
        assert_eq!(info.channels, ["room"], "a plugin sees its own names");
    }

    /// [`state`] where channels `p:room*` keep 3 publications.
    async fn with_history() -> InstanceState {
        let mut s = state(EventCaps { max_store_ops: 100, max_effects: 100, max_messages: 100, ..caps() }).await;
        let limits = history::Limits { size: 3, ttl: Duration::from_secs(60), max_bytes: 1 << 20 };
        let rule = history::Rule { pattern: "room*".into(), namespace: Some("p".into()), limits };
        let mut env = clone_env(&s.env);
        env.caps.max_bytes = 1 << 20;
        env.caps.max_message_bytes = 1 << 10;
        env.history = history_of(&env.store, &env.metrics, history::Rules(vec![rule]));
        s.env = Arc::new(env);
        s
    }

    #[tokio::test]
    async fn a_channel_with_history_answers_positions_pages_and_stamps() {
        let mut s = with_history().await;
        let p1 = channels::Host::publish(&mut s, "room".into(), text(1)).await.unwrap().expect("a position");
        let p2 = channels::Host::publish(&mut s, "room".into(), text(2)).await.unwrap().unwrap();
        assert_eq!((p1.offset, p2.offset, &p1.epoch), (1, 2, &p2.epoch));
        assert!(s.call.effects.is_empty(), "made at the call, not after the event");
        let plain = channels::Host::publish(&mut s, "other".into(), text(1)).await;
        assert!(matches!(plain, Ok(None)), "no history");
        let stamped = channels::Host::publish_stamped(&mut s, "room".into(), r#"{"say":"hi"}"#.into()).await.unwrap();
        assert_eq!(stamped.offset, 3);
        let bad = channels::Host::publish_stamped(&mut s, "room".into(), "[1]".into()).await;
        assert_eq!(bad.map(drop), Err(Error::InvalidArgument));
        let none = channels::Host::publish_stamped(&mut s, "other".into(), "{}".into()).await;
        assert_eq!(none.map(drop), Err(Error::NotAllowed), "a channel without history has no positions");

        let page = channels::Host::history(&mut s, "room".into(), Some(p1.clone()), 10).await.unwrap();
        assert!(page.recovered);
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [2, 3]);
        let want = format!(r#"{{"offset":3,"epoch":"{}","say":"hi"}}"#, p1.epoch);
        assert!(matches!(&page.publications[1].msg, types::Message::Text(t) if *t == want));
        let lost = types::Position { offset: 1, epoch: "gone".into() };
        assert!(!channels::Host::history(&mut s, "room".into(), Some(lost), 10).await.unwrap().recovered);
        let plain = channels::Host::history(&mut s, "other".into(), None, 10).await.unwrap();
        assert_eq!((plain.publications.len(), plain.latest.offset), (0, 0));
    }

    #[tokio::test]
    async fn a_subscribe_with_a_position_asks_for_a_replay_of_what_was_missed() {
        let mut s = with_history().await;
        let p1 = channels::Host::publish(&mut s, "room".into(), text(1)).await.unwrap().unwrap();
        channels::Host::publish(&mut s, "room".into(), text(2)).await.unwrap();
        let joined = channels::Host::subscribe(&mut s, MINE, "room".into(), Some(p1.clone())).await.unwrap();
        assert_eq!((joined.recovered, joined.replayed), (true, 1));
        assert_eq!(joined.latest.map(|p| p.offset), Some(2));
        let [Effect::Resume { conn: MINE, channel, since, page }] = &s.call.effects[..] else {
            panic!("{:?}", s.call.effects)
        };
        assert_eq!(channel, "p:room");
        assert_eq!(since.as_ref().map(|p| p.offset), Some(1));
        assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [2]);
        // Without a position it joins at the channel's position now.
        let joined = channels::Host::subscribe(&mut s, MINE, "room-2".into(), None).await.unwrap();
        assert_eq!((joined.recovered, joined.replayed, joined.latest.map(|p| p.offset)), (true, 0, Some(0)));
        // A channel without history: a plain subscription; a position
        // cannot be served.
        let plain = channels::Host::subscribe(&mut s, MINE, "other".into(), Some(p1)).await.unwrap();
        assert_eq!((plain.recovered, plain.latest.is_none()), (false, true));
        assert!(matches!(s.call.effects.last(), Some(Effect::Subscribe { .. })));
    }

    #[tokio::test]
    async fn messages_are_capped_in_size_count_and_bytes_per_event() {
        let mut s = state(caps()).await;
        assert_eq!(publish(&mut s, "c".into(), text(17)).await, Err(Error::TooLarge));
        for _ in 0..2 {
            assert_eq!(publish(&mut s, "c".into(), text(16)).await, Ok(()));
        }
        // 32 of 40 bytes spent: a 9-byte message is over the budget, an
        // 8-byte one fits, then the count (3) is spent.
        assert_eq!(channels::Host::broadcast(&mut s, text(9), None).await, Err(Error::QuotaExceeded));
        assert_eq!(channels::Host::broadcast(&mut s, text(8), None).await, Ok(()));
        assert_eq!(connections::Host::emit(&mut s, MINE, text(0)).await, Err(Error::QuotaExceeded));
        assert_eq!(s.call.effects.len(), 3);
        // The next event starts with a fresh budget.
        begin(&mut s, Duration::from_secs(60));
        assert_eq!(connections::Host::emit(&mut s, MINE, text(16)).await, Ok(()));
    }

    #[tokio::test]
    async fn store_operations_values_keys_and_channels_are_checked() {
        let mut s = state(caps()).await;
        assert_eq!(kv::Host::set(&mut s, "k".into(), vec![0; 9], None).await, Err(Error::TooLarge));
        assert_eq!(kv::Host::get(&mut s, "k".repeat(1025)).await, Err(Error::TooLarge));
        let meta = connections::Host::set_metadata(&mut s, MINE, "k".into(), "v".repeat(9)).await;
        assert_eq!(meta, Err(Error::TooLarge));
        // A refused operation still spends one of the event's four.
        assert_eq!(kv::Host::get(&mut s, "k".into()).await, Ok(None));
        assert_eq!(kv::Host::get(&mut s, "k".into()).await, Err(Error::QuotaExceeded));

        let mut s = state(caps()).await;
        assert_eq!(kv::Host::set(&mut s, "k".into(), vec![1; 8], None).await, Ok(()));
        assert_eq!(kv::Host::get(&mut s, "k".into()).await, Ok(Some(vec![1; 8])));
        assert_eq!(kv::Host::increment(&mut s, "k".into(), 1).await, Err(Error::InvalidArgument), "not a counter");
        assert_eq!(channels::Host::members(&mut s, String::new()).await, Err(Error::InvalidArgument));
        let mut s = state(caps()).await;
        assert_eq!(publish(&mut s, "c".repeat(257), text(1)).await, Err(Error::TooLarge));
        assert_eq!(publish(&mut s, String::new(), text(1)).await, Err(Error::InvalidArgument));
    }

    #[test]
    fn a_long_log_line_is_cut_at_a_character_boundary() {
        assert_eq!(fit_log_line("short"), "short");
        let long = "é".repeat(3000); // 6,000 bytes
        let cut = fit_log_line(&long);
        assert!(cut.len() < 4096 + 32, "{}", cut.len());
        assert!(cut.ends_with("… (6000 bytes, cut)"), "{}", &cut[cut.len() - 40..]);
    }

    #[tokio::test]
    async fn an_events_log_lines_are_capped_in_bytes() {
        let mut s = state(caps()).await;
        let line = "l".repeat(4000);
        for _ in 0..(MAX_LOG_BYTES_PER_EVENT / 4000) {
            logging::Host::log(&mut s, LogLevel::Info, line.clone()).await;
        }
        let dropped = || s.env.metrics.guest_log_dropped.with_label_values(&["p"]).get();
        assert_eq!(dropped(), 0, "within the budget");
        for _ in 0..5 {
            logging::Host::log(&mut s, LogLevel::Info, line.clone()).await;
        }
        assert_eq!(s.env.metrics.guest_log_dropped.with_label_values(&["p"]).get(), 5);
        begin(&mut s, Duration::from_secs(60));
        logging::Host::log(&mut s, LogLevel::Info, line.clone()).await;
        assert_eq!(s.env.metrics.guest_log_dropped.with_label_values(&["p"]).get(), 5, "the next event has a budget");
    }

    /// A key/value back end that never answers (Redis stopped with SIGSTOP).
    struct Stalled;

    #[async_trait::async_trait]
    impl crate::store::Kv for Stalled {
        fn set_quota(&self, _: &str, _: crate::store::KvQuota) {}
        async fn usage(&self, _: &str) -> StoreResult<crate::store::KvUsage> {
            std::future::pending().await
        }
        async fn get(&self, _: &str, _: &str) -> StoreResult<Option<Vec<u8>>> {
            std::future::pending().await
        }
        async fn set(&self, _: &str, _: &str, _: Vec<u8>, _: Option<Duration>) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str, _: &str) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn increment(&self, _: &str, _: &str, _: i64) -> StoreResult<i64> {
            std::future::pending().await
        }
        async fn compare_and_swap(&self, _: &str, _: &str, _: Option<&[u8]>, _: Vec<u8>) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn list_keys(&self, _: &str, _: &str, _: Option<&str>, _: usize) -> StoreResult<Vec<String>> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_store_that_stalls_answers_unavailable_at_the_events_deadline() {
        let mut s = state(caps()).await;
        let mut env = clone_env(&s.env);
        env.store.kv = Arc::new(Stalled);
        s.env = Arc::new(env);
        begin(&mut s, Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(kv::Host::get(&mut s, "k".into()).await, Err(Error::Unavailable));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90) && waited < Duration::from_secs(2), "{waited:?}");
        // Past the deadline, a further call gives up at once.
        let started = Instant::now();
        assert_eq!(kv::Host::set(&mut s, "k".into(), vec![1], None).await, Err(Error::Unavailable));
        assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
        assert_eq!(s.env.metrics.store_errors.with_label_values(&["kv_get"]).get(), 1);
    }

    fn clone_env(env: &PluginEnv) -> PluginEnv {
        PluginEnv {
            name: env.name.clone(),
            namespace: env.namespace.clone(),
            channel_namespace: env.channel_namespace.clone(),
            store: env.store.clone(),
            history: env.history.clone(),
            caps: env.caps,
            metrics: env.metrics.clone(),
            budget: env.budget.clone(),
            pool_growth_bytes: env.pool_growth_bytes,
            language: env.language,
            clock: env.clock.clone(),
            on_timer: env.on_timer,
        }
    }

    #[tokio::test]
    async fn timers_are_checked_counted_due_by_the_clock_and_capped_per_plugin() {
        use timers::{Host as _, When};
        let mut s = state(EventCaps { max_store_ops: 100, ..caps() }).await;
        // Due by the plugin's clock (manual here, at 1,000,000).
        s.set("a".into(), When::AfterMs(500), b"pay".to_vec()).await.unwrap();
        let a = s.get("a".into()).await.unwrap().unwrap();
        assert_eq!((a.due_unix_ms, a.payload.as_slice(), a.attempts), (1_000_500, b"pay".as_slice(), 0));
        let stored = s.env.store.timers.get("p", "a").await.unwrap().unwrap();
        assert_eq!(&*stored.route, "/r", "the timer remembers the route of the event that set it");
        s.set("b".into(), When::AtUnixMs(7), Vec::new()).await.unwrap();
        // Two pending is this plugin's cap; a replace is not a new one.
        assert_eq!(s.set("c".into(), When::AfterMs(1), Vec::new()).await, Err(Error::QuotaExceeded));
        s.set("a".into(), When::AfterMs(u64::MAX), Vec::new()).await.unwrap();
        let far = s.get("a".into()).await.unwrap().unwrap().due_unix_ms;
        assert_eq!(far, 1_000_000 + crate::store::MAX_TTL.as_millis() as u64, "at most a century ahead");
        // Arguments.
        assert_eq!(s.set(String::new(), When::AfterMs(1), Vec::new()).await, Err(Error::InvalidArgument));
        assert_eq!(s.set("k".repeat(MAX_KEY_BYTES + 1), When::AfterMs(1), Vec::new()).await, Err(Error::TooLarge));
        assert_eq!(s.set("a".into(), When::AfterMs(1), vec![0; 9]).await, Err(Error::TooLarge), "over max_value_bytes");
        assert!(s.cancel("b".into()).await.unwrap());
        assert!(!s.cancel("b".into()).await.unwrap());
        assert!(matches!(s.get("b".into()).await, Ok(None)));
        // Each call is a store operation.
        assert_eq!(s.call.store_ops, 12);
        // Another plugin's timer of the same name is another timer.
        assert_eq!(s.env.store.timers.get("q", "a").await.unwrap(), None);

        // A component without on-timer may not set one.
        let mut env = clone_env(&s.env);
        env.on_timer = false;
        s.env = Arc::new(env);
        assert_eq!(s.set("x".into(), When::AfterMs(1), Vec::new()).await, Err(Error::NotAllowed));
    }

    #[tokio::test]
    async fn effects_of_any_kind_are_capped_per_event() {
        let mut s = state(EventCaps { max_messages: 100, max_store_ops: 100, ..caps() }).await;
        for i in 0..5 {
            let r = subscribe(&mut s, MINE, format!("c{i}")).await;
            assert_eq!(r, Ok(()), "effect {i}");
        }
        assert_eq!(channels::Host::unsubscribe(&mut s, MINE, "c0".into()).await, Err(Error::QuotaExceeded));
        assert_eq!(connections::Host::emit(&mut s, MINE, text(1)).await, Err(Error::QuotaExceeded));
        assert_eq!(s.call.effects.len(), 5);
    }

    #[tokio::test]
    async fn a_message_is_forwarded_only_to_another_handler_of_the_route() {
        // Four messages an event: the refused forwards below spend none.
        let mut s = state(EventCaps { max_messages: 4, ..caps() }).await;
        // `p` is the second of the chain a, p, b; `sel` is reached only by
        // a selection.
        let names = ["a", "p", "b", "sel"].map(Arc::from).to_vec();
        let handlers = Arc::new(RouteHandlers::new(names, 3));
        let event = EventContext::new(MINE, Arc::from("/r"), handlers);
        s.call.begin(&event, tokio::time::Instant::now() + Duration::from_secs(60), 1000);
        assert_eq!(forward(&mut s, "b").await, Err(Error::NotAllowed), "only a message may be handed on");
        s.call.forwardable = true;
        assert_eq!(forward(&mut s, "p").await, Err(Error::NotAllowed), "not to itself");
        assert_eq!(forward(&mut s, "nobody").await, Err(Error::NotAllowed), "not out of the route");
        for to in ["a", "b", "sel", ""] {
            assert_eq!(forward(&mut s, to).await, Ok(()), "{to:?}");
        }
        let sent: Vec<(&str, &str)> = s
            .call
            .effects
            .iter()
            .map(|e| match e {
                Effect::Forward { from, handler, conn: MINE, .. } => (&**from, handler.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sent, [("p", "a"), ("p", "b"), ("p", "sel"), ("p", "")]);
        // The chain's last has no next one (a handler after it is reached
        // only by selection).
        let names = ["a", "p", "sel"].map(Arc::from).to_vec();
        let event = EventContext::new(MINE, Arc::from("/r"), Arc::new(RouteHandlers::new(names, 2)));
        s.call.begin(&event, tokio::time::Instant::now() + Duration::from_secs(60), 1000);
        s.call.forwardable = true;
        assert_eq!(forward(&mut s, "").await, Err(Error::NotAllowed));
        assert_eq!(forward(&mut s, "sel").await, Ok(()));
    }
}
