//! The in-memory key/value back end: for tests, `--store memory` and
//! throwaway runs. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Kv, KvQuota, KvUsage, Quotas};
use super::{StoreError, StoreResult, entry_bytes, parse_counter};

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// One namespace: its keys in order and what they hold together (expired
/// entries included until they are dropped).
#[derive(Default)]
struct Space {
    map: BTreeMap<String, Entry>,
    usage: KvUsage,
}

impl Space {
    fn live_value(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        self.map.get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
    }

    /// Writes `entry` under `key` if the quota admits it. An expired entry
    /// counts until it is dropped: when a write does not fit, the expired
    /// ones are dropped and the write tried again.
    fn put(&mut self, key: &str, entry: Entry, quota: &KvQuota, now: Instant) -> StoreResult<()> {
        let new = entry_bytes(key, entry.value.len());
        let old = |s: &Space| s.map.get(key).map(|e| entry_bytes(key, e.value.len()));
        if !self.usage.admits(old(self), new, quota) {
            self.drop_expired(now);
            if !self.usage.admits(old(self), new, quota) {
                return Err(StoreError::QuotaExceeded);
            }
        }
        let before = old(self);
        self.map.insert(key.to_string(), entry);
        self.usage = self.usage.after(before, Some(new));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.usage = self.usage.after(Some(entry_bytes(key, e.value.len())), None);
        Some(e)
    }

    fn drop_expired(&mut self, now: Instant) {
        let usage = &mut self.usage;
        self.map.retain(|k, e| {
            let keep = e.live(now);
            if !keep {
                *usage = usage.after(Some(entry_bytes(k, e.value.len())), None);
            }
            keep
        });
    }
}

/// Namespaces of ordered keys in process memory.
#[derive(Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, Space>>,
    quotas: Quotas,
}

impl MemoryKv {
    fn with_ns<R>(&self, ns: &str, f: impl FnOnce(&mut Space) -> R) -> R {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if !spaces.contains_key(ns) {
            spaces.insert(ns.to_string(), Space::default());
        }
        f(spaces.get_mut(ns).expect("namespace inserted above"))
    }
}

#[async_trait]
impl Kv for MemoryKv {
    fn set_quota(&self, ns: &str, quota: KvQuota) {
        self.quotas.set(ns, quota);
    }

    async fn usage(&self, ns: &str) -> StoreResult<KvUsage> {
        Ok(self.with_ns(ns, |s| {
            s.drop_expired(Instant::now());
            s.usage
        }))
    }

    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with_ns(ns, |s| s.live_value(key, Instant::now())))
    }

    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        let now = Instant::now();
        let expires = ttl.map(|d| now + Duration::from_millis(super::ttl_ms(d)));
        let quota = self.quotas.get(ns);
        self.with_ns(ns, |s| s.put(key, Entry { value, expires }, &quota, now))
    }

    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |s| s.remove(key).is_some_and(|e| e.live(now))))
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        let now = Instant::now();
        let quota = self.quotas.get(ns);
        self.with_ns(ns, |s| {
            let current = parse_counter(s.live_value(key, now).as_deref())?;
            let next = current.checked_add(delta).ok_or(StoreError::NotACounter)?;
            // An increment keeps a live key's expiry, like Redis INCRBY.
            let expires = s.map.get(key).filter(|e| e.live(now)).and_then(|e| e.expires);
            s.put(key, Entry { value: next.to_string().into_bytes(), expires }, &quota, now)?;
            Ok(next)
        })
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        let now = Instant::now();
        let quota = self.quotas.get(ns);
        self.with_ns(ns, |s| {
            if s.live_value(key, now).as_deref() != expected {
                return Ok(false);
            }
            s.put(key, Entry { value, expires: None }, &quota, now)?;
            Ok(true)
        })
    }

    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |s| {
            let start = match cursor {
                Some(c) if c >= prefix => Bound::Excluded(c.to_string()),
                _ => Bound::Included(prefix.to_string()),
            };
            s.map
                .range((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.live(now))
                .take(limit)
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }
}
