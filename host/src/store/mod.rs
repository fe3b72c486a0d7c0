//! Host-owned state, by concern: plugin key/value namespaces ([`Kv`]) and
//! the records of open connections with their metadata and channel
//! membership ([`Connections`]), channel history ([`History`]) and
//! plugins' timers ([`Timers`]). A [`Store`] is one of each.
//!
//! Nothing here knows about Wasm or sockets; the runtime's host imports, the
//! hub and the admin API call in through plain Rust types.
//!
//! Back ends: key/value in memory ([`MemoryKv`]) or in a redb file, durable
//! on acknowledgement ([`EmbeddedKv`]); connection records in this process's
//! memory ([`Presence`]), because connections live and die with the process
//! that holds their sockets. With several hosts, Redis holds both
//! (`crate::cluster`).

mod db_file;
mod embedded;
mod history;
mod history_file;
mod memory;
mod presence;
#[cfg(test)]
pub(crate) mod suite;
mod timer_file;
pub mod timers;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::conn_id::ConnId;
pub use embedded::EmbeddedKv;
#[cfg(test)]
pub(crate) use history::tests::{LIMITS as HISTORY_LIMITS, suite as history_suite};
pub use history::{Deliver, Entry, History, LocalHistory};
pub use memory::MemoryKv;
pub use presence::Presence;
pub use timers::{LocalTimers, Timer, Timers};

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// No such connection (never opened, or closed).
    #[error("unknown connection")]
    UnknownConnection,
    /// A counter's current value is not a decimal integer, or would overflow.
    #[error("value is not a valid counter")]
    NotACounter,
    /// The change would take the connection or namespace past its caps.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The back end could not complete the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// What the store keeps about one open connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The connection.
    pub id: ConnId,
    /// The route it opened on.
    pub route: Arc<str>,
    /// The plugin that serves that route.
    pub plugin: Arc<str>,
    /// The peer address.
    pub remote_addr: String,
    /// When it opened, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Metadata as (key, value) pairs, in insertion order.
    pub metadata: Vec<(String, String)>,
    /// Channels it is a member of, in subscription order.
    pub channels: Vec<String>,
}

/// How much one connection's record may hold; a change past it fails with
/// [`StoreError::QuotaExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordCaps {
    /// Metadata keys.
    pub max_metadata_keys: usize,
    /// Bytes of metadata keys and values together.
    pub max_metadata_bytes: usize,
    /// Channels it is a member of.
    pub max_channels: usize,
}

impl RecordCaps {
    /// No caps (a copy of a record checked elsewhere).
    pub const UNLIMITED: RecordCaps =
        RecordCaps { max_metadata_keys: usize::MAX, max_metadata_bytes: usize::MAX, max_channels: usize::MAX };
}

impl Default for RecordCaps {
    /// The caps of the default limits.
    fn default() -> Self {
        crate::config::Limits::default().record_caps()
    }
}

/// How much one key/value namespace may hold: keys, and bytes of keys and
/// values together. A write past it fails with
/// [`StoreError::QuotaExceeded`]; one that adds no key and no bytes (an
/// overwrite with a value no larger, a delete) always succeeds. An expired
/// key counts until its back end reclaims it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuota {
    /// Keys.
    pub max_keys: u64,
    /// Bytes of keys and values.
    pub max_bytes: u64,
}

impl KvQuota {
    /// No quota (a namespace no plugin has set one for).
    pub const UNLIMITED: KvQuota = KvQuota { max_keys: u64::MAX, max_bytes: u64::MAX };
}

/// What a key/value namespace holds now, as its quota counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

impl KvUsage {
    /// Whether changing one entry from `old` bytes (`None`: absent) to `new`
    /// bytes stays within `quota`.
    pub fn admits(&self, old: Option<u64>, new: u64, quota: &KvQuota) -> bool {
        let before = old.unwrap_or(0);
        let keys_ok = old.is_some() || self.keys < quota.max_keys;
        let bytes_ok = new <= before || self.bytes.saturating_sub(before).saturating_add(new) <= quota.max_bytes;
        keys_ok && bytes_ok
    }

    /// These figures after one entry changed from `old` bytes to `new` (`None`: absent).
    pub fn after(self, old: Option<u64>, new: Option<u64>) -> KvUsage {
        let keys = (self.keys + u64::from(new.is_some())).saturating_sub(u64::from(old.is_some()));
        let bytes = self.bytes.saturating_sub(old.unwrap_or(0)).saturating_add(new.unwrap_or(0));
        KvUsage { keys, bytes }
    }
}

/// The size an entry counts for: its key and its value.
pub(crate) fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

/// Each namespace's quota, as set by the plugins that use it; a back end
/// looks a write's quota up here.
#[derive(Default)]
pub(crate) struct Quotas(std::sync::RwLock<std::collections::HashMap<String, KvQuota>>);

impl Quotas {
    pub(crate) fn get(&self, ns: &str) -> KvQuota {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(ns).copied().unwrap_or(KvQuota::UNLIMITED)
    }

    pub(crate) fn set(&self, ns: &str, quota: KvQuota) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(ns.to_string(), quota);
    }
}

/// Plugin key/value namespaces.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// Sets the quota of namespace `ns` for the writes that follow (none
    /// set: [`KvQuota::UNLIMITED`]).
    fn set_quota(&self, ns: &str, quota: KvQuota);
    /// Why writes fail now, when they do (shown by `/healthz`).
    fn health(&self) -> Option<String> {
        None
    }
    /// What namespace `ns` holds now.
    async fn usage(&self, ns: &str) -> StoreResult<KvUsage>;
    /// Reads a key; `None` when absent or expired.
    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a key, with an optional time to live (at most [`MAX_TTL`]).
    /// Durable when it returns, for back ends that are durable.
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()>;
    /// Removes a key; whether it existed.
    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool>;
    /// Adds `delta` to a decimal counter (absent counts as 0); the new value.
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64>;
    /// Replaces the value if it equals `expected` (`None`: must be absent).
    async fn compare_and_swap(&self, ns: &str, key: &str, expected: Option<&[u8]>, value: Vec<u8>)
    -> StoreResult<bool>;
    /// Keys starting with `prefix`, ascending, after `cursor`, at most `limit`.
    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>>;
}

/// The records of open connections: route, plugin, metadata and channel
/// membership (presence).
#[async_trait]
pub trait Connections: Send + Sync + 'static {
    /// Records a connection that is opening.
    async fn open(&self, record: ConnectionRecord) -> StoreResult<()>;
    /// Removes a connection's record, metadata and memberships; the record if
    /// it existed (so a second call returns `None`).
    async fn close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>>;
    /// A connection's record.
    async fn get(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>>;
    /// Open connections, optionally of one route, with ids above `after`,
    /// ascending, at most `limit`.
    async fn list(
        &self,
        route: Option<&str>,
        after: Option<ConnId>,
        limit: usize,
    ) -> StoreResult<Vec<ConnectionRecord>>;
    /// The plugin serving a connection, `None` when it is not open.
    async fn plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>>;
    /// One metadata value of an open connection.
    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>>;
    /// Sets one metadata value of an open connection, within its
    /// [`RecordCaps`].
    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()>;
    /// Removes one metadata value of an open connection.
    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()>;
    /// Adds an open connection to a channel (idempotent), within its
    /// [`RecordCaps`].
    async fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()>;
    /// Removes a connection from a channel (a no-op when not a member).
    async fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()>;
    /// The members of a channel, ascending.
    async fn members(&self, channel: &str) -> StoreResult<Vec<ConnId>>;
}

/// The host's state: key/value and connection records, each behind its own
/// back end.
#[derive(Clone)]
pub struct Store {
    /// Plugin key/value namespaces.
    pub kv: Arc<dyn Kv>,
    /// Connection records and presence.
    pub connections: Arc<dyn Connections>,
    /// Channel history.
    pub history: Arc<dyn History>,
    /// Every plugin's pending timers.
    pub timers: Arc<dyn Timers>,
}

/// The longest time to live a key keeps: a longer one (up to `u64::MAX`
/// milliseconds, which would overflow a deadline) is taken as this.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A time to live as the back ends store it: at most [`MAX_TTL`], at least
/// one millisecond.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.min(MAX_TTL).as_millis() as u64).max(1)
}

/// Which back end to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Everything in memory; gone when the process exits.
    Memory,
    /// Key/value in `<data_dir>/wharf.redb`.
    Embedded,
}

/// Opens the local back end `kind`, with its files under `data_dir`;
/// connection records are in this process's memory, within `caps`.
pub fn open(kind: &StoreKind, data_dir: &Path, caps: RecordCaps) -> anyhow::Result<Store> {
    let (kv, history, timers): (Arc<dyn Kv>, Arc<dyn History>, Arc<dyn Timers>) = match kind {
        StoreKind::Memory => {
            (Arc::new(MemoryKv::default()), Arc::new(LocalHistory::memory()), Arc::new(LocalTimers::memory()))
        }
        StoreKind::Embedded => (
            Arc::new(EmbeddedKv::open(data_dir)?),
            Arc::new(LocalHistory::embedded(data_dir)?),
            Arc::new(LocalTimers::embedded(data_dir)?),
        ),
    };
    Ok(Store { kv, connections: Arc::new(Presence::new(caps)), history, timers })
}

/// Parses a stored counter value.
pub(crate) fn parse_counter(value: Option<&[u8]>) -> StoreResult<i64> {
    match value {
        None => Ok(0),
        Some(bytes) => {
            std::str::from_utf8(bytes).ok().and_then(|s| s.trim().parse().ok()).ok_or(StoreError::NotACounter)
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
