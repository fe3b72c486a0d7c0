//! Host-owned state behind one trait: plugin key/value namespaces and the
//! records of open connections (route, plugin, metadata).
//!
//! Nothing here knows about Wasm or sockets; the runtime's host imports and
//! the server call into a [`Store`] through plain Rust types.

mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::events::ConnId;
pub use memory::MemoryStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// No such connection (never opened, or closed).
    #[error("unknown connection")]
    UnknownConnection,
    /// A counter's current value is not a decimal integer, or would overflow.
    #[error("value is not a valid counter")]
    NotACounter,
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
    /// Metadata as (key, value) pairs, in insertion order.
    pub metadata: Vec<(String, String)>,
}

/// Key/value namespaces and connection records.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a key; `None` when absent or expired.
    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a key, with an optional time to live.
    async fn kv_set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()>;
    /// Removes a key; whether it existed.
    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool>;
    /// Adds `delta` to a decimal counter (absent counts as 0); the new value.
    async fn kv_increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64>;
    /// Replaces the value if it equals `expected` (`None`: must be absent).
    async fn kv_compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool>;
    /// Keys starting with `prefix`, ascending, after `cursor`, at most `limit`.
    async fn kv_list_keys(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    /// Records a connection that is opening.
    async fn connection_open(&self, record: ConnectionRecord) -> StoreResult<()>;
    /// Removes a connection's record and metadata; the record if it existed.
    async fn connection_close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>>;
    /// A connection's record.
    async fn connection(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>>;
    /// The plugin serving a connection, `None` when it is not open.
    async fn connection_plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>>;
    /// One metadata value of an open connection.
    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>>;
    /// Sets one metadata value of an open connection.
    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()>;
    /// Removes one metadata value of an open connection.
    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()>;
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
