//! The in-memory back end: for tests, `wharf test` and throwaway runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{ConnectionRecord, Store, StoreError, StoreResult, parse_counter};
use crate::events::ConnId;

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// Everything in process memory; gone when the process exits.
#[derive(Default)]
pub struct MemoryStore {
    kv: Mutex<HashMap<String, BTreeMap<String, Entry>>>,
    conns: DashMap<ConnId, ConnectionRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_ns<R>(&self, ns: &str, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> R) -> R {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        if !kv.contains_key(ns) {
            kv.insert(ns.to_string(), BTreeMap::new());
        }
        f(kv.get_mut(ns).expect("namespace inserted above"))
    }
}

fn live_value(map: &BTreeMap<String, Entry>, key: &str, now: Instant) -> Option<Vec<u8>> {
    map.get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
}

#[async_trait]
impl Store for MemoryStore {
    async fn kv_get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with_ns(ns, |m| live_value(m, key, Instant::now())))
    }

    async fn kv_set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        let expires = ttl.map(|d| Instant::now() + d);
        self.with_ns(ns, |m| m.insert(key.to_string(), Entry { value, expires }));
        Ok(())
    }

    async fn kv_delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |m| m.remove(key).is_some_and(|e| e.live(now))))
    }

    async fn kv_increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        let now = Instant::now();
        self.with_ns(ns, |m| {
            let current = parse_counter(live_value(m, key, now).as_deref())?;
            let next = current.checked_add(delta).ok_or(StoreError::NotACounter)?;
            // An increment keeps a live key's expiry, like Redis INCRBY.
            let expires = m.get(key).filter(|e| e.live(now)).and_then(|e| e.expires);
            m.insert(key.to_string(), Entry { value: next.to_string().into_bytes(), expires });
            Ok(next)
        })
    }

    async fn kv_compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |m| {
            if live_value(m, key, now).as_deref() != expected {
                return false;
            }
            m.insert(key.to_string(), Entry { value, expires: None });
            true
        }))
    }

    async fn kv_list_keys(
        &self,
        ns: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |m| {
            let start = match cursor {
                Some(c) if c >= prefix => std::ops::Bound::Excluded(c.to_string()),
                _ => std::ops::Bound::Included(prefix.to_string()),
            };
            m.range((start, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.live(now))
                .take(limit)
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    async fn connection_open(&self, record: ConnectionRecord) -> StoreResult<()> {
        self.conns.insert(record.id, record);
        Ok(())
    }

    async fn connection_close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(self.conns.remove(&id).map(|(_, r)| r))
    }

    async fn connection(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(self.conns.get(&id).map(|r| r.clone()))
    }

    async fn connection_plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>> {
        Ok(self.conns.get(&id).map(|r| r.plugin.clone()))
    }

    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        let rec = self.conns.get(&id).ok_or(StoreError::UnknownConnection)?;
        Ok(rec.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        match rec.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => rec.metadata.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }

    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        rec.metadata.retain(|(k, _)| k != key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: ConnId) -> ConnectionRecord {
        ConnectionRecord {
            id,
            route: "/r".into(),
            plugin: "p".into(),
            remote_addr: "127.0.0.1:1".into(),
            metadata: vec![],
        }
    }

    #[tokio::test]
    async fn namespaces_are_separate() {
        let s = MemoryStore::new();
        s.kv_set("a", "k", b"1".to_vec(), None).await.unwrap();
        assert_eq!(s.kv_get("b", "k").await.unwrap(), None);
        assert_eq!(s.kv_get("a", "k").await.unwrap(), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn increment_cas_and_ttl() {
        let s = MemoryStore::new();
        assert_eq!(s.kv_increment("n", "c", 5).await.unwrap(), 5);
        assert_eq!(s.kv_increment("n", "c", -2).await.unwrap(), 3);
        s.kv_set("n", "t", b"x".to_vec(), None).await.unwrap();
        assert_eq!(s.kv_increment("n", "t", 1).await, Err(StoreError::NotACounter));
        assert!(!s.kv_compare_and_swap("n", "t", Some(b"y"), b"z".to_vec()).await.unwrap());
        assert!(s.kv_compare_and_swap("n", "t", Some(b"x"), b"z".to_vec()).await.unwrap());
        assert!(s.kv_compare_and_swap("n", "new", None, b"1".to_vec()).await.unwrap());
        assert!(!s.kv_compare_and_swap("n", "new", None, b"2".to_vec()).await.unwrap());
        s.kv_set("n", "e", b"v".to_vec(), Some(Duration::from_millis(1))).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.kv_get("n", "e").await.unwrap(), None);
        assert!(!s.kv_delete("n", "e").await.unwrap());
    }

    #[tokio::test]
    async fn list_keys_pages_by_prefix() {
        let s = MemoryStore::new();
        for k in ["a1", "a2", "a3", "b1"] {
            s.kv_set("n", k, vec![], None).await.unwrap();
        }
        assert_eq!(s.kv_list_keys("n", "a", None, 2).await.unwrap(), ["a1", "a2"]);
        assert_eq!(s.kv_list_keys("n", "a", Some("a2"), 2).await.unwrap(), ["a3"]);
        assert!(s.kv_list_keys("n", "c", None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn metadata_lives_with_the_connection() {
        let s = MemoryStore::new();
        assert_eq!(s.metadata_set(1, "k", "v").await, Err(StoreError::UnknownConnection));
        s.connection_open(record(1)).await.unwrap();
        s.metadata_set(1, "k", "v").await.unwrap();
        s.metadata_set(1, "k", "w").await.unwrap();
        assert_eq!(s.metadata_get(1, "k").await.unwrap().as_deref(), Some("w"));
        let closed = s.connection_close(1).await.unwrap().expect("was open");
        assert_eq!(closed.metadata, vec![("k".to_string(), "w".to_string())]);
        assert_eq!(s.connection_close(1).await.unwrap(), None);
        assert_eq!(s.metadata_get(1, "k").await, Err(StoreError::UnknownConnection));
    }
}
