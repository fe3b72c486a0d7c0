//! The key/value half of a local store, and [`LocalStore`], which joins a
//! key/value back end to the in-memory presence of this host.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::presence::Presence;
use super::{ConnectionRecord, Store, StoreResult};
use crate::conn_id::ConnId;

/// A key/value back end with namespaces.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// See [`Store::kv_get`].
    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// See [`Store::kv_set`].
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()>;
    /// See [`Store::kv_delete`].
    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool>;
    /// See [`Store::kv_increment`].
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64>;
    /// See [`Store::kv_compare_and_swap`].
    async fn compare_and_swap(&self, ns: &str, key: &str, expected: Option<&[u8]>, value: Vec<u8>)
    -> StoreResult<bool>;
    /// See [`Store::kv_list_keys`].
    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>>;
}

/// A store for one host: key/value in `K`, presence in memory.
pub struct LocalStore<K> {
    kv: K,
    presence: Presence,
}

impl<K: Kv> LocalStore<K> {
    /// Joins a key/value back end to an empty presence table.
    pub fn new(kv: K) -> Self {
        LocalStore { kv, presence: Presence::default() }
    }
}

#[async_trait]
impl<K: Kv> Store for LocalStore<K> {
    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(ns, key).await
    }

    async fn kv_set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        self.kv.set(ns, key, value, ttl).await
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        self.kv.delete(ns, key).await
    }

    async fn kv_increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        self.kv.increment(ns, key, delta).await
    }

    async fn kv_compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        self.kv.compare_and_swap(ns, key, expected, value).await
    }

    async fn kv_list_keys(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.kv.list_keys(ns, prefix, cursor, limit).await
    }

    async fn connection_open(&self, record: ConnectionRecord) -> StoreResult<()> {
        self.presence.open(record);
        Ok(())
    }

    async fn connection_close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(self.presence.close(id))
    }

    async fn connection(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(self.presence.get(id))
    }

    async fn connections(
        &self,
        route: Option<&str>,
        after: Option<ConnId>,
        limit: usize,
    ) -> StoreResult<Vec<ConnectionRecord>> {
        Ok(self.presence.list(route, after, limit))
    }

    async fn connection_plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>> {
        Ok(self.presence.plugin(id))
    }

    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        self.presence.metadata_get(id, key)
    }

    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        self.presence.metadata_set(id, key, value)
    }

    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        self.presence.metadata_delete(id, key)
    }

    async fn channel_subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        self.presence.subscribe(id, channel)
    }

    async fn channel_unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        self.presence.unsubscribe(id, channel)
    }

    async fn channel_members(&self, channel: &str) -> StoreResult<Vec<ConnId>> {
        Ok(self.presence.members(channel))
    }
}
