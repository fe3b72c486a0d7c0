//! What a route allows its clients: message size, outbound queue and its
//! overflow policy, pings, lifetime, connection caps, origins, subprotocols
//! and the rate of new connections, and the counters behind the connection
//! caps. The application builds one policy per route; the hub admits by it
//! and the transports enforce the rest.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{Limits, SlowReader};

/// Keyed limiters are swept of idle clients once they track this many.
const LIMITER_SWEEP_AT: usize = 10_000;

/// One route's connection policy.
pub struct ConnectionPolicy {
    /// Largest inbound message and frame; past it: close 1009.
    pub max_message_bytes: usize,
    /// Messages queued for one connection.
    pub outbound_queue: usize,
    /// Payload bytes queued for one connection.
    pub outbound_queue_bytes: usize,
    /// What a full queue does.
    pub slow_reader: SlowReader,
    /// Server ping interval; `None` disables pings.
    pub ping_interval: Option<Duration>,
    /// Unanswered pings before the connection is closed with 1001.
    pub missed_pongs: u32,
    /// Longest a connection may stay open.
    pub max_lifetime: Option<Duration>,
    /// Longest a write may block on a client that does not read.
    pub write_timeout: Duration,
    /// Open connections on this route at once.
    pub max_connections: Option<usize>,
    /// Allowed `Origin` values; empty allows any.
    pub origins: Vec<String>,
    /// Subprotocols the route speaks; empty leaves it to the handler.
    pub subprotocols: Vec<String>,
    /// The token every client must present (`[routes.auth]`).
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// Whether permessage-deflate is negotiated when offered.
    pub compression: crate::config::Compression,
    /// Set with [`ConnectionPolicy::with_connect_rate`].
    pub(crate) connect_rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Default for ConnectionPolicy {
    /// The policy of a route under the default limits.
    fn default() -> Self {
        ConnectionPolicy::from_limits(&Limits::default())
    }
}

impl ConnectionPolicy {
    /// The policy of a route with these limits (the global ones with the
    /// route's overrides); no connection cap, origin or subprotocol list.
    pub fn from_limits(l: &Limits) -> Self {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        ConnectionPolicy {
            max_message_bytes: l.max_message_bytes,
            outbound_queue: l.outbound_queue,
            outbound_queue_bytes: l.outbound_queue_bytes,
            slow_reader: l.slow_reader,
            ping_interval: ms(l.ping_interval_ms),
            missed_pongs: l.missed_pongs,
            max_lifetime: ms(l.max_lifetime_ms),
            write_timeout: Duration::from_millis(l.write_timeout_ms),
            max_connections: None,
            origins: Vec::new(),
            subprotocols: Vec::new(),
            auth: None,
            compression: crate::config::Compression::Off,
            connect_rate: None,
        }
        .with_connect_rate(l.connect_rate, l.connect_burst)
    }

    /// Limits new connections from one IP address to `per_second`, with
    /// bursts of `burst` (at least 1); 0 turns the limit off.
    pub fn with_connect_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.connect_rate = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        self
    }

    /// Whether a new connection from `ip` is within the rate limit.
    pub(crate) fn admit_rate(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.connect_rate else { return true };
        let ok = limiter.check_key(&ip).is_ok();
        if limiter.len() > LIMITER_SWEEP_AT {
            limiter.retain_recent();
        }
        ok
    }

    /// Whether a handshake with this `Origin` header value may proceed.
    pub(crate) fn admit_origin(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self.origins.is_empty() || self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)),
        }
    }

    /// The subprotocol to answer with, given what the client offered and
    /// what the handler chose; `Err` says why the handler's choice is
    /// unusable (the handshake then fails with 500).
    pub fn negotiate(&self, offered: &[String], chosen: Option<&str>) -> Result<Option<String>, &'static str> {
        if let Some(p) = chosen {
            if !offered.iter().any(|o| o == p) {
                return Err("the handler chose a subprotocol the client did not offer");
            }
            if !self.subprotocols.is_empty() && !self.subprotocols.iter().any(|s| s == p) {
                return Err("the handler chose a subprotocol the route does not list");
            }
            return Ok(Some(p.to_string()));
        }
        Ok(self.first_supported(offered))
    }

    /// Checks the client's offer before the handler runs.
    pub(crate) fn check_offer(&self, offered: &[String]) -> Result<(), String> {
        if self.subprotocols.is_empty() || offered.is_empty() || self.first_supported(offered).is_some() {
            Ok(())
        } else {
            Err(format!(
                "none of the offered subprotocols is supported; this route speaks: {}",
                self.subprotocols.join(", ")
            ))
        }
    }

    fn first_supported(&self, offered: &[String]) -> Option<String> {
        offered.iter().find(|o| self.subprotocols.iter().any(|s| s == *o)).cloned()
    }
}

/// Counts open connections against a cap; the count drops with the guard.
#[derive(Debug, Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    /// Takes one place if fewer than `max` are taken.
    pub fn acquire(self: &Arc<Self>, max: usize) -> Option<Place> {
        let taken = self.0.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Place(self.clone()))
    }
}

/// A [`Counter`] per key (a client IP address), so that one key cannot take
/// a whole cap. Keys whose places are all given back are forgotten once the
/// map grows past [`LIMITER_SWEEP_AT`].
pub struct KeyedCounter<K> {
    counters: dashmap::DashMap<K, Arc<Counter>>,
}

impl<K> Default for KeyedCounter<K>
where
    K: Eq + std::hash::Hash,
{
    fn default() -> Self {
        KeyedCounter { counters: dashmap::DashMap::new() }
    }
}

impl<K> KeyedCounter<K>
where
    K: Eq + std::hash::Hash + Clone,
{
    /// Takes one of `key`'s places if it holds fewer than `max`.
    pub fn acquire(&self, key: K, max: usize) -> Option<Place> {
        let counter = self.counters.entry(key).or_default().clone();
        if self.counters.len() > LIMITER_SWEEP_AT {
            // Each taken place holds its counter: a key none holds is free.
            self.counters.retain(|_, c| Arc::strong_count(c) > 1);
        }
        counter.acquire(max)
    }
}

/// One taken place of a [`Counter`], given back on drop.
#[derive(Debug)]
pub struct Place(Arc<Counter>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(subprotocols: &[&str]) -> ConnectionPolicy {
        ConnectionPolicy { subprotocols: subprotocols.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn offer(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subprotocol_negotiation() {
        let open = policy(&[]);
        assert_eq!(open.check_offer(&offer(&["x"])), Ok(()));
        assert_eq!(open.negotiate(&offer(&["x"]), None), Ok(None));
        assert_eq!(open.negotiate(&offer(&["x"]), Some("x")), Ok(Some("x".into())));
        assert!(open.negotiate(&offer(&["x"]), Some("y")).is_err());

        let listed = policy(&["chat.v2", "chat.v1"]);
        assert!(listed.check_offer(&offer(&["other"])).unwrap_err().contains("chat.v2, chat.v1"));
        assert_eq!(listed.check_offer(&offer(&[])), Ok(()));
        assert_eq!(listed.negotiate(&offer(&["other", "chat.v1", "chat.v2"]), None), Ok(Some("chat.v1".into())));
        assert_eq!(listed.negotiate(&offer(&["chat.v1", "chat.v2"]), Some("chat.v2")), Ok(Some("chat.v2".into())));
        assert!(listed.negotiate(&offer(&["other", "chat.v1"]), Some("other")).is_err());
    }

    #[test]
    fn origins() {
        let any = ConnectionPolicy::default();
        assert!(any.admit_origin(Some("https://evil.example")));
        let only = ConnectionPolicy { origins: vec!["https://app.example".into()], ..Default::default() };
        assert!(only.admit_origin(Some("https://app.example")));
        assert!(only.admit_origin(Some("HTTPS://APP.EXAMPLE")));
        assert!(!only.admit_origin(Some("https://evil.example")));
        assert!(!only.admit_origin(Some("null")));
        assert!(only.admit_origin(None), "non-browser clients send no Origin");
    }

    #[test]
    fn connect_rate_is_per_ip() {
        let p = ConnectionPolicy::default().with_connect_rate(1, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(p.admit_rate(a) && p.admit_rate(a), "burst of 2");
        assert!(!p.admit_rate(a), "third at once is over the rate");
        assert!(p.admit_rate(b), "another client has its own budget");
        let off = ConnectionPolicy::default().with_connect_rate(0, 0);
        assert!((0..100).all(|_| off.admit_rate(a)));
    }

    #[test]
    fn each_key_has_its_own_share() {
        let k = KeyedCounter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Place> = (0..3).map(|_| k.acquire(a, 3).expect("within a's share")).collect();
        assert!(k.acquire(a, 3).is_none(), "a's share is taken");
        assert!(k.acquire(b, 3).is_some(), "b has its own");
        drop(held);
        assert!(k.acquire(a, 3).is_some(), "given back on drop");
    }

    #[test]
    fn new_connections_from_one_address_are_rate_limited_by_default() {
        let p = ConnectionPolicy::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = (0..3000).filter(|_| p.admit_rate(a)).count();
        assert!((2000..2100).contains(&admitted), "a burst of 2,000 then 1,000/s: {admitted}");
        assert!(p.admit_rate("10.0.0.2".parse().unwrap()), "another address has its own budget");
    }

    #[test]
    fn counter_caps_and_releases() {
        let c = Arc::new(Counter::default());
        let a = c.acquire(2).unwrap();
        let _b = c.acquire(2).unwrap();
        assert!(c.acquire(2).is_none());
        assert_eq!(c.0.load(Ordering::Acquire), 2, "a refused acquire takes nothing");
        drop(a);
        assert!(c.acquire(2).is_some());
    }
}
