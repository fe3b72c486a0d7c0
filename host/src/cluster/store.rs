//! The Redis store of one host: key/value, connection records and presence
//! shared by every host that names the same Redis database.
//!
//! The records of this host's own connections are also kept in memory (the
//! same [`Presence`] the local back ends use). Reads of them never wait for
//! Redis, and they keep working while Redis is unreachable: a change Redis
//! did not take marks the store out of date, and the liveness task's
//! resync (`liveness.rs`) writes every local record back once Redis answers
//! again (also after a Redis restart that lost its data). Key/value and
//! other hosts' connections need Redis and answer `Unavailable` without it.
//! A change this host makes to another host's connection is told to its
//! holder through the outbox (`Envelope::Record`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Value};

use super::bus::{Outbox, Target};
use super::envelope::Envelope;
use super::{redact, scripts};
use crate::conn_id::{ConnId, HOST_BITS, host_of};
use crate::store::{
    ConnectionRecord, Connections, Kv, KvQuota, KvUsage, Presence, Quotas, RecordCaps, StoreError, StoreResult,
};

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn kv_key(ns: &str, key: &str) -> String {
    format!("wharf:kv:{}:{ns}:{key}", ns.len())
}

/// A key/value script on key `key` of namespace `ns`, with its keys (the
/// value, then the namespace's index, sizes, expiries and usage) and its
/// first argument (the key) in place.
fn kv_call(script: &'static redis::Script, ns: &str, key: &str) -> redis::ScriptInvocation<'static> {
    let n = ns.len();
    let mut call = script.prepare_invoke();
    call.key(kv_key(ns, key))
        .key(format!("wharf:kvi:{n}:{ns}"))
        .key(format!("wharf:kvs:{n}:{ns}"))
        .key(format!("wharf:kvx:{n}:{ns}"))
        .key(format!("wharf:kvu:{n}:{ns}"));
    call
}

fn padded(id: ConnId) -> String {
    format!("{id:020}")
}

fn text(v: &Value) -> StoreResult<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad_reply("non-UTF-8 text")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(bad_reply("expected text")),
    }
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected reply ({what})"))
}

/// A record as the READ and CLOSE scripts return it.
pub(super) fn record_from(id: ConnId, v: Value) -> StoreResult<Option<ConnectionRecord>> {
    let items = match v {
        Value::Nil => return Ok(None),
        Value::Array(items) if items.len() == 7 => items,
        _ => return Err(bad_reply("connection record")),
    };
    let list = |v: &Value| -> StoreResult<Vec<String>> {
        match v {
            Value::Array(xs) => xs.iter().map(text).collect(),
            Value::Nil => Ok(Vec::new()),
            _ => Err(bad_reply("list")),
        }
    };
    let meta = list(&items[5])?;
    Ok(Some(ConnectionRecord {
        id,
        route: text(&items[0])?.into(),
        plugin: text(&items[1])?.into(),
        remote_addr: text(&items[2])?,
        connected_at_ms: text(&items[3])?.parse().map_err(|_| bad_reply("connected_at"))?,
        metadata: meta.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect(),
        channels: list(&items[6])?,
    }))
}

/// The Redis store of one host.
pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    pub(super) host: u32,
    /// This host's open connections (authoritative for them).
    pub(super) local: Presence,
    /// A change to a local record did not reach Redis.
    pub(super) stale: AtomicBool,
    /// Redis answered the last heartbeat; while it does not, operations
    /// that need Redis fail at once instead of waiting for a timeout.
    pub(super) reachable: AtomicBool,
    pub(super) heartbeat_ttl: Duration,
    /// Frames for other hosts: a change to another host's connection is
    /// told to its holder.
    outbox: Outbox,
    /// This process's mark on its heartbeat key, so that two processes
    /// never hold one host number unnoticed.
    pub(super) token: String,
    /// What each connection's record may hold.
    caps: RecordCaps,
    /// Each key/value namespace's quota.
    quotas: Quotas,
    /// Told when this host sets a timer.
    pub(super) timers_changed: tokio::sync::Notify,
}

impl RedisStore {
    /// Connects to `url`, takes a host number and registers this host;
    /// changes to other hosts' connections are told to them through
    /// `outbox`.
    pub(super) async fn connect(
        url: &str,
        heartbeat_ttl: Duration,
        caps: RecordCaps,
        outbox: Outbox,
    ) -> anyhow::Result<RedisStore> {
        let shown = redact(url);
        let client = redis::Client::open(url).with_context(|| format!("`{shown}` is not a Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .with_context(|| format!("connecting to Redis at {shown}"))?;
        let token = format!(
            "{:016x}{:08x}",
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0),
            std::process::id()
        );
        let mut store = RedisStore {
            conn: conn.clone(),
            host: 0,
            local: Presence::new(caps),
            stale: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            heartbeat_ttl,
            outbox,
            token,
            caps,
            quotas: Quotas::default(),
            timers_changed: tokio::sync::Notify::new(),
        };
        // A number another process holds (handed out again by a Redis that
        // lost its data) is skipped.
        for _ in 0..64 {
            let host: u64 = conn.incr("wharf:hosts:next", 1).await.context("taking a host number from Redis")?;
            store.host = Some(host)
                .filter(|h| *h < (1u64 << HOST_BITS))
                .map(|h| h as u32)
                .context("Redis handed out every host number (reset `wharf:hosts:next`)")?;
            if store.register().await.context("registering this host in Redis")? {
                return Ok(store);
            }
        }
        anyhow::bail!("every host number Redis handed out is held by another host")
    }

    /// A handle on the command connection (it reconnects by itself).
    pub(super) fn commands(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A failed command; a lost or refused connection or a timeout also
    /// marks Redis unreachable until the next heartbeat gets an answer, so
    /// that the calls after it do not each wait for a timeout.
    pub(super) fn failed(&self, e: redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.reachable.store(false, Ordering::Release);
        }
        unavailable(e)
    }

    /// A connection to Redis, or `Unavailable` at once while it is down.
    pub(super) fn redis(&self) -> StoreResult<ConnectionManager> {
        if self.reachable.load(Ordering::Acquire) {
            Ok(self.conn.clone())
        } else {
            Err(StoreError::Unavailable("redis: unreachable".into()))
        }
    }

    /// Runs a change of a local record against Redis; when Redis does not
    /// take it, the local record stays changed and a resync will catch up.
    fn mirror(&self, what: &str, r: redis::RedisResult<impl Sized>) {
        if let Err(e) = r {
            let e = self.failed(e);
            if !self.stale.swap(true, Ordering::AcqRel) {
                tracing::warn!(error = %e, what, "Redis did not take a change to a local connection; it will be written again when Redis answers");
            }
        }
    }

    async fn remote_record(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        let mut conn = self.redis()?;
        let v: Value = scripts::READ.arg(id).invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        record_from(id, v)
    }
}

pub(super) fn open_invocation(r: &ConnectionRecord, host: u32) -> redis::ScriptInvocation<'static> {
    let mut inv = scripts::OPEN.prepare_invoke();
    inv.arg(r.id).arg(&*r.route).arg(&*r.plugin).arg(&r.remote_addr).arg(r.connected_at_ms).arg(host);
    inv.arg(r.metadata.len());
    for (k, v) in &r.metadata {
        inv.arg(k).arg(v);
    }
    for c in &r.channels {
        inv.arg(c);
    }
    inv
}

impl RedisStore {
    /// This host's number among the hosts sharing Redis: the high bits of
    /// the connection ids it makes.
    pub fn host(&self) -> u32 {
        self.host
    }
}

#[async_trait]
impl Kv for RedisStore {
    fn set_quota(&self, ns: &str, quota: KvQuota) {
        self.quotas.set(ns, quota);
    }

    async fn usage(&self, ns: &str) -> StoreResult<KvUsage> {
        let mut conn = self.redis()?;
        let r: (u64, u64) = kv_call(&scripts::KV_USAGE, ns, "")
            .arg(kv_key(ns, ""))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(KvUsage { keys: r.0, bytes: r.1 })
    }

    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut conn = self.redis()?;
        conn.get(kv_key(ns, key)).await.map_err(|e| self.failed(e))
    }

    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        let mut conn = self.redis()?;
        let ttl_ms = ttl.map_or(0, crate::store::ttl_ms);
        let quota = self.quotas.get(ns);
        let n: i64 = kv_call(&scripts::KV_SET, ns, key)
            .arg(key)
            .arg(value)
            .arg(ttl_ms)
            .arg(kv_key(ns, ""))
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        if n == 2 { Err(StoreError::QuotaExceeded) } else { Ok(()) }
    }

    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        let mut conn = self.redis()?;
        let n: i64 =
            kv_call(&scripts::KV_DELETE, ns, key).arg(key).invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        Ok(n > 0)
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        let mut conn = self.redis()?;
        let quota = self.quotas.get(ns);
        let r: Vec<i64> = kv_call(&scripts::KV_INCREMENT, ns, key)
            .arg(key)
            .arg(delta)
            .arg(kv_key(ns, ""))
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        match r.as_slice() {
            [1, n] => Ok(*n),
            [2] => Err(StoreError::QuotaExceeded),
            _ => Err(StoreError::NotACounter),
        }
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        let mut conn = self.redis()?;
        let quota = self.quotas.get(ns);
        let n: i64 = kv_call(&scripts::KV_CAS, ns, key)
            .arg(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(kv_key(ns, ""))
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        match n {
            2 => Err(StoreError::QuotaExceeded),
            n => Ok(n == 1),
        }
    }

    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.redis()?;
        let start = match cursor {
            Some(c) if c >= prefix => format!("({c}"),
            _ => format!("[{prefix}"),
        };
        // No UTF-8 string contains the byte 0xff, so every key that starts
        // with `prefix` sorts below `prefix` + 0xff.
        let mut end = b"(".to_vec();
        end.extend_from_slice(prefix.as_bytes());
        end.push(0xff);
        let end: Vec<u8> = if prefix.is_empty() { b"+".to_vec() } else { end };
        kv_call(&scripts::KV_LIST, ns, "")
            .arg(kv_key(ns, ""))
            .arg(start)
            .arg(end)
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))
    }
}

#[async_trait]
impl Connections for RedisStore {
    async fn open(&self, record: ConnectionRecord) -> StoreResult<()> {
        debug_assert_eq!(host_of(record.id), self.host, "a connection opens on the host that made its id");
        let r = match self.redis() {
            Ok(mut conn) => open_invocation(&record, self.host).invoke_async::<i64>(&mut conn).await.map(drop),
            Err(_) => {
                self.stale.store(true, Ordering::Release);
                Ok(())
            }
        };
        self.local.open(record);
        self.mirror("open", r);
        Ok(())
    }

    async fn close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        match self.local.close(id) {
            Some(record) => {
                let r = match self.redis() {
                    Ok(mut conn) => scripts::CLOSE.arg(id).invoke_async::<Value>(&mut conn).await.map(drop),
                    Err(_) => {
                        self.stale.store(true, Ordering::Release);
                        Ok(())
                    }
                };
                self.mirror("close", r);
                Ok(Some(record))
            }
            None => {
                let mut conn = self.redis()?;
                let v: Value = scripts::CLOSE.arg(id).invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
                record_from(id, v)
            }
        }
    }

    async fn get(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        match self.local.get(id) {
            Some(r) => Ok(Some(r)),
            None if host_of(id) == self.host => Ok(None),
            None => self.remote_record(id).await,
        }
    }

    async fn list(
        &self,
        route: Option<&str>,
        after: Option<ConnId>,
        limit: usize,
    ) -> StoreResult<Vec<ConnectionRecord>> {
        let mut conn = self.redis()?;
        let set = route.map_or_else(|| "wharf:conns".to_string(), |r| format!("wharf:rc:{r}"));
        let start = after.map_or_else(|| "-".to_string(), |a| format!("({}", padded(a)));
        let page: Vec<Value> =
            scripts::LIST.arg(set).arg(start).arg(limit).invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        let mut out = Vec::with_capacity(page.len() / 2);
        let mut page = page.into_iter();
        while let (Some(id), Some(record)) = (page.next(), page.next()) {
            let id: ConnId = text(&id)?.parse().map_err(|_| bad_reply("connection id"))?;
            // This host's own records come from its copy, which Redis may lag.
            let record = match self.local.get(id) {
                Some(r) => Some(r),
                None if host_of(id) == self.host => None,
                None => record_from(id, record)?,
            };
            out.extend(record);
        }
        Ok(out)
    }

    async fn plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>> {
        if let Some(p) = self.local.plugin(id) {
            return Ok(Some(p));
        }
        if host_of(id) == self.host {
            return Ok(None);
        }
        let mut conn = self.redis()?;
        let p: Option<String> = conn.hget(format!("wharf:c:{id}"), "plugin").await.map_err(|e| self.failed(e))?;
        Ok(p.map(Arc::from))
    }

    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        if self.local.contains(id) || host_of(id) == self.host {
            return self.local.metadata_get(id, key);
        }
        let mut conn = self.redis()?;
        let v: Vec<Value> =
            scripts::METADATA.arg("get").arg(id).arg(key).invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        match v.as_slice() {
            [Value::Int(0)] => Err(StoreError::UnknownConnection),
            [Value::Int(1)] | [Value::Int(1), Value::Nil] => Ok(None),
            [Value::Int(1), v] => text(v).map(Some),
            _ => Err(bad_reply("metadata")),
        }
    }

    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        self.change(id, RecordChange::MetadataSet { key: key.into(), value: value.into() }).await
    }

    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        self.change(id, RecordChange::MetadataDelete { key: key.into() }).await
    }

    async fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        self.change(id, RecordChange::Subscribe { channel: channel.into() }).await
    }

    async fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        self.change(id, RecordChange::Unsubscribe { channel: channel.into() }).await
    }

    async fn members(&self, channel: &str) -> StoreResult<Vec<ConnId>> {
        let mut conn = self.redis()?;
        let mut ids: Vec<ConnId> = conn.smembers(format!("wharf:ch:{channel}")).await.map_err(|e| self.failed(e))?;
        ids.sort_unstable();
        Ok(ids)
    }
}

impl RedisStore {
    /// Applies a change another host already made in Redis to this host's
    /// copy of its connection `id`.
    pub(super) fn apply_remote_change(&self, id: ConnId, change: &RecordChange) {
        let _ = self.apply_local(id, change, false);
    }

    /// A change to this host's copy; `checked`: within the caps.
    fn apply_local(&self, id: ConnId, change: &RecordChange, checked: bool) -> StoreResult<()> {
        match change {
            RecordChange::MetadataSet { key, value } => self.local.metadata_set(id, key, value, checked),
            RecordChange::MetadataDelete { key } => self.local.metadata_delete(id, key),
            RecordChange::Subscribe { channel } => self.local.subscribe(id, channel, checked),
            RecordChange::Unsubscribe { channel } => self.local.unsubscribe(id, channel),
        }
    }

    /// A change to a connection's metadata or channels: the record here
    /// and in Redis when the connection is local, in Redis (then told to
    /// the holder) when it is another host's.
    async fn change(&self, id: ConnId, change: RecordChange) -> StoreResult<()> {
        let local = self.local.contains(id);
        // This host's copy is authoritative for its own connections and
        // checks the caps itself; Redis mirrors it whatever it holds.
        let caps = if local { RecordCaps::UNLIMITED } else { self.caps };
        let script = match &change {
            RecordChange::MetadataSet { key, value } => {
                let mut s = scripts::METADATA.prepare_invoke();
                s.arg("set").arg(id).arg(key).arg(value).arg(caps.max_metadata_keys).arg(caps.max_metadata_bytes);
                s
            }
            RecordChange::MetadataDelete { key } => {
                let mut s = scripts::METADATA.prepare_invoke();
                s.arg("del").arg(id).arg(key).arg("").arg(0).arg(0);
                s
            }
            RecordChange::Subscribe { channel } => {
                let mut s = scripts::MEMBERSHIP.prepare_invoke();
                s.arg("sub").arg(id).arg(channel).arg(caps.max_channels);
                s
            }
            RecordChange::Unsubscribe { channel } => {
                let mut s = scripts::MEMBERSHIP.prepare_invoke();
                s.arg("unsub").arg(id).arg(channel).arg(0);
                s
            }
        };
        if local {
            self.apply_local(id, &change, true)?;
            match self.redis() {
                Ok(mut conn) => self.mirror("change", script.invoke_async::<Value>(&mut conn).await),
                Err(_) => self.stale.store(true, Ordering::Release),
            }
            return Ok(());
        }
        if host_of(id) == self.host {
            return Err(StoreError::UnknownConnection);
        }
        let answer = match script.invoke_async::<Value>(&mut self.redis()?).await.map_err(|e| self.failed(e))? {
            Value::Int(n) => n,
            Value::Array(v) => match v.first() {
                Some(Value::Int(n)) => *n,
                _ => return Err(bad_reply("change")),
            },
            _ => return Err(bad_reply("change")),
        };
        match answer {
            1 => {}
            2 => return Err(StoreError::QuotaExceeded),
            _ => return Err(StoreError::UnknownConnection),
        }
        self.outbox.push(Target::Host(host_of(id)), Envelope::Record { conn: id, change }.encode(self.host));
        Ok(())
    }
}

/// A change to one connection's metadata or channel membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordChange {
    /// A metadata value was set.
    MetadataSet {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A metadata value was removed.
    MetadataDelete {
        /// The key.
        key: String,
    },
    /// The connection joined a channel.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// The connection left a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
}
