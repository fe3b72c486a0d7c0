//! The in-memory key/value back end: for tests, `--store memory` and
//! throwaway runs. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Kv;
use super::{StoreError, StoreResult, parse_counter};

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// Namespaces of ordered keys in process memory.
#[derive(Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, BTreeMap<String, Entry>>>,
}

impl MemoryKv {
    fn with_ns<R>(&self, ns: &str, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> R) -> R {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if !spaces.contains_key(ns) {
            spaces.insert(ns.to_string(), BTreeMap::new());
        }
        f(spaces.get_mut(ns).expect("namespace inserted above"))
    }
}

fn live_value(map: &BTreeMap<String, Entry>, key: &str, now: Instant) -> Option<Vec<u8>> {
    map.get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
}

#[async_trait]
impl Kv for MemoryKv {
    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with_ns(ns, |m| live_value(m, key, Instant::now())))
    }

    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        let expires = ttl.map(|d| Instant::now() + Duration::from_millis(super::ttl_ms(d)));
        self.with_ns(ns, |m| m.insert(key.to_string(), Entry { value, expires }));
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |m| m.remove(key).is_some_and(|e| e.live(now))))
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
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

    async fn compare_and_swap(
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

    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        Ok(self.with_ns(ns, |m| {
            let start = match cursor {
                Some(c) if c >= prefix => Bound::Excluded(c.to_string()),
                _ => Bound::Included(prefix.to_string()),
            };
            m.range((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.live(now))
                .take(limit)
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }
}
