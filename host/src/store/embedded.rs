//! The embedded key/value back end: a redb database file in the data
//! directory. A write is acknowledged only after its transaction commits
//! with fsync; concurrent writes share one commit (group commit) through a
//! single writer thread, which also makes increment and compare-and-swap
//! atomic. Expired keys are reclaimed by the same thread every second,
//! through an index of expiry times. Each namespace's keys and bytes are
//! counted in the same transactions as its writes, for its quota. When
//! writes fail (a full disk), the writer opens the file again by itself
//! once the disk takes writes (`db_file.rs`).

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use tokio::sync::oneshot;

use super::db_file::DbFile;
use super::{Kv, KvQuota, KvUsage, Quotas};
use super::{StoreError, StoreResult, now_ms, parse_counter};

/// Keys are `namespace \0 key`; values are an 8-byte big-endian expiry
/// (Unix milliseconds, 0 for none) followed by the value's bytes.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Keys with an expiry, by when: `(expires_ms, full key)`.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// Each namespace's keys and bytes (of keys and values): `ns → (keys, bytes)`.
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");

/// Facts about the file: `expiry_index` = 1 once [`EXPIRY`] covers every
/// key, `usage_index` = 1 once [`USAGE`] counts every key (files written
/// before they existed are indexed once at open).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The database file inside the data directory.
pub const FILE_NAME: &str = "wharf.redb";

/// Most writes folded into one commit.
const MAX_BATCH: usize = 1024;
/// How often an idle writer reclaims expired keys, and most per commit.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_BATCH: usize = 1024;

fn full_key(ns: &str, key: &str) -> String {
    let mut k = String::with_capacity(ns.len() + 1 + key.len());
    k.push_str(ns);
    k.push('\0');
    k.push_str(key);
    k
}

fn encode(value: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// The expiry of stored bytes (0: none).
fn expiry(stored: &[u8]) -> u64 {
    stored.get(..8).and_then(|h| h.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// The value, if the stored bytes are well formed and not expired at `now`.
fn decode(stored: &[u8], now: u64) -> Option<&[u8]> {
    let (head, value) = stored.split_at_checked(8)?;
    let expires = u64::from_be_bytes(head.try_into().ok()?);
    (expires == 0 || expires > now).then_some(value)
}

/// The namespace of a full key and the bytes an entry of `stored` bytes
/// counts for in it (its key and its value).
fn sized<'k>(full_key: &'k str, stored: &[u8]) -> (&'k str, u64) {
    let (ns, key) = full_key.split_once('\0').unwrap_or(("", full_key));
    (ns, super::entry_bytes(key, stored.len().saturating_sub(8)))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

enum Op {
    Set { key: String, value: Vec<u8>, expires: u64, quota: KvQuota },
    Delete { key: String },
    Increment { key: String, delta: i64, quota: KvQuota },
    Cas { key: String, expected: Option<Vec<u8>>, value: Vec<u8>, quota: KvQuota },
}

enum Done {
    Unit,
    Bool(bool),
    Int(i64),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Done>>,
}

/// Key/value namespaces in a redb file.
pub struct EmbeddedKv {
    file: Arc<DbFile>,
    quotas: Quotas,
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedKv {
    /// Lets queued writes finish and closes the file, so the same data
    /// directory can be opened again at once.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl EmbeddedKv {
    /// Opens (or creates) `<data_dir>/wharf.redb`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let file = Arc::new(DbFile::open(data_dir.join(FILE_NAME), index_file)?);
        let (writer, jobs) = mpsc::channel();
        let writer_file = file.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-store-writer".into())
            .spawn(move || write_loop(&writer_file, jobs))
            .context("starting the store writer thread")?;
        Ok(EmbeddedKv { file, quotas: Quotas::default(), writer: Some(writer), thread: Some(thread) })
    }

    async fn write(&self, op: Op) -> StoreResult<Done> {
        let (reply, done) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(|| unavailable("the store is closing"))?;
        writer.send(Job { op, reply }).map_err(|_| unavailable("the store writer has stopped"))?;
        done.await.map_err(|_| unavailable("the store writer has stopped"))?
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let txn = self.file.get()?.begin_read().map_err(unavailable)?;
        let table = txn.open_table(KV).map_err(unavailable)?;
        f(&table)
    }
}

/// Creates the tables, and builds the expiry index and the namespaces'
/// usage of a file written before they existed.
fn index_file(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(KV)?;
    let mut meta = txn.open_table(META)?;
    let done = |meta: &redb::Table<&str, u64>, what: &str| -> Result<bool, redb::Error> {
        Ok(meta.get(what)?.is_some_and(|v| v.value() == 1))
    };
    let kv = txn.open_table(KV)?;
    if !done(&meta, "expiry_index")? {
        let mut index = txn.open_table(EXPIRY)?;
        for entry in kv.iter()? {
            let (k, v) = entry?;
            let expires = expiry(v.value());
            if expires != 0 {
                index.insert((expires, k.value()), ())?;
            }
        }
        meta.insert("expiry_index", 1)?;
    }
    if !done(&meta, "usage_index")? {
        let mut counted: std::collections::HashMap<String, KvUsage> = std::collections::HashMap::new();
        for entry in kv.iter()? {
            let (k, v) = entry?;
            let (ns, bytes) = sized(k.value(), v.value());
            let u = counted.entry(ns.to_string()).or_default();
            *u = u.after(None, Some(bytes));
        }
        let mut usage = txn.open_table(USAGE)?;
        for (ns, u) in counted {
            usage.insert(ns.as_str(), (u.keys, u.bytes))?;
        }
        meta.insert("usage_index", 1)?;
    }
    Ok(())
}

/// Removes up to [`SWEEP_BATCH`] keys expired at `now`; how many.
fn sweep(db: &Database, now: u64) -> StoreResult<usize> {
    let txn = db.begin_write().map_err(unavailable)?;
    let n = {
        let mut t = Tables::open(&txn).map_err(unavailable)?;
        let due: Vec<(u64, String)> = t
            .expiry
            .range::<(u64, &str)>(..(now + 1, ""))
            .map_err(unavailable)?
            .take(SWEEP_BATCH)
            .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        for (expires, key) in &due {
            t.expiry.remove((*expires, key.as_str())).map_err(unavailable)?;
            // Only if it was not written again since (with another expiry).
            let still = t.kv.get(key.as_str()).map_err(unavailable)?.is_some_and(|g| expiry(g.value()) == *expires);
            if still {
                put(&mut t, key, None)?;
            }
        }
        t.flush()?;
        due.len()
    };
    txn.commit().map_err(unavailable)?;
    Ok(n)
}

/// Applies queued writes in batches: one transaction and one fsync each;
/// every [`SWEEP_EVERY`], busy or idle, reclaims expired keys. While writes
/// fail, they are refused at once with the reason, and every
/// [`SWEEP_EVERY`] the file is opened again if the disk takes writes.
fn write_loop(file: &DbFile, jobs: mpsc::Receiver<Job>) {
    let mut next_tick = std::time::Instant::now() + SWEEP_EVERY;
    loop {
        let now = std::time::Instant::now();
        if now >= next_tick {
            tick(file);
            next_tick = now + SWEEP_EVERY;
        }
        let first = match jobs.recv_timeout(next_tick.saturating_duration_since(now)) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = match file.failing() {
            Some(why) => Err(format!("the embedded store cannot write now: {why}")),
            None => file.get().map_err(|e| e.to_string()).and_then(|db| apply_batch(&db, &batch)).inspect_err(|why| {
                file.failed(why);
            }),
        };
        match results {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(why) => {
                for job in batch {
                    let _ = job.reply.send(Err(unavailable(&why)));
                }
            }
        }
    }
}

/// Once a second: reclaims expired keys, or, while writes fail, opens the
/// file again and tries an empty commit.
fn tick(file: &DbFile) {
    if file.failing().is_none() {
        if let Err(e) = file.get().and_then(|db| sweep(&db, now_ms())) {
            tracing::warn!(error = %e, "could not reclaim expired keys; will try again");
            file.failed(&e.to_string());
        }
        return;
    }
    let probe = file.reopen().and_then(|()| {
        let db = file.get().map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    });
    match probe {
        Ok(()) => file.succeeded(),
        Err(why) => {
            tracing::debug!(reason = %why, "the embedded store has not recovered yet");
            file.failed(&why);
        }
    }
}

/// One transaction for the whole batch, committed with fsync: each job's
/// answer, or why the batch failed (then nothing of it was written).
fn apply_batch(db: &Database, batch: &[Job]) -> Result<Vec<StoreResult<Done>>, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let results = {
        let mut tables = Tables::open(&txn).map_err(|e| e.to_string())?;
        let now = now_ms();
        let results = batch.iter().map(|job| apply(&mut tables, &job.op, now)).collect::<Vec<_>>();
        tables.flush().map_err(|e| e.to_string())?;
        results
    };
    // An I/O error inside the transaction fails the whole batch: redb
    // would refuse the commit anyway.
    if let Some(Err(StoreError::Unavailable(why))) =
        results.iter().find(|r| matches!(r, Err(StoreError::Unavailable(_))))
    {
        return Err(why.clone());
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(results)
}

/// The tables one write transaction changes together, and the usage of
/// the namespaces it wrote (read once, written back by [`Tables::flush`]).
struct Tables<'t> {
    kv: redb::Table<'t, &'static str, &'static [u8]>,
    expiry: redb::Table<'t, (u64, &'static str), ()>,
    usage: redb::Table<'t, &'static str, (u64, u64)>,
    counted: std::collections::HashMap<String, KvUsage>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Tables {
            kv: txn.open_table(KV)?,
            expiry: txn.open_table(EXPIRY)?,
            usage: txn.open_table(USAGE)?,
            counted: std::collections::HashMap::new(),
        })
    }

    fn usage(&mut self, ns: &str) -> StoreResult<KvUsage> {
        if let Some(u) = self.counted.get(ns) {
            return Ok(*u);
        }
        let got = self.usage.get(ns).map_err(unavailable)?;
        let u = got.map_or_else(KvUsage::default, |g| {
            let (keys, bytes) = g.value();
            KvUsage { keys, bytes }
        });
        self.counted.insert(ns.to_string(), u);
        Ok(u)
    }

    /// Writes the usage of every namespace this transaction changed.
    fn flush(&mut self) -> StoreResult<()> {
        for (ns, u) in self.counted.drain() {
            if u == KvUsage::default() {
                self.usage.remove(ns.as_str()).map_err(unavailable)?;
            } else {
                self.usage.insert(ns.as_str(), (u.keys, u.bytes)).map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Refuses writing `stored` under `key` when it would take the key's
    /// namespace past `quota`; an expired entry not yet reclaimed still
    /// counts.
    fn admit(&mut self, key: &str, stored: &[u8], quota: &KvQuota) -> StoreResult<()> {
        let old = self.kv.get(key).map_err(unavailable)?.map(|g| sized(key, g.value()).1);
        let (ns, new) = sized(key, stored);
        if self.usage(ns)?.admits(old, new, quota) { Ok(()) } else { Err(StoreError::QuotaExceeded) }
    }
}

/// Writes `stored` under `key` (`None`: removes it), keeping the expiry
/// index and the namespace's usage in step.
fn put(t: &mut Tables<'_>, key: &str, stored: Option<&[u8]>) -> StoreResult<()> {
    let old = match stored {
        Some(v) => t.kv.insert(key, v).map_err(unavailable)?,
        None => t.kv.remove(key).map_err(unavailable)?,
    }
    .map(|g| (expiry(g.value()), sized(key, g.value()).1));
    let new = stored.map_or(0, expiry);
    if let Some(old) = old.map(|(e, _)| e).filter(|e| *e != 0 && *e != new) {
        t.expiry.remove((old, key)).map_err(unavailable)?;
    }
    if new != 0 && old.map(|(e, _)| e) != Some(new) {
        t.expiry.insert((new, key), ()).map_err(unavailable)?;
    }
    let ns = sized(key, &[]).0;
    let usage = t.usage(ns)?.after(old.map(|(_, b)| b), stored.map(|v| sized(key, v).1));
    t.counted.insert(ns.to_string(), usage);
    Ok(())
}

/// Writes `stored` under `key` if the namespace's quota admits it.
fn put_within(t: &mut Tables<'_>, key: &str, stored: &[u8], quota: &KvQuota) -> StoreResult<()> {
    t.admit(key, stored, quota)?;
    put(t, key, Some(stored))
}

fn apply(t: &mut Tables<'_>, op: &Op, now: u64) -> StoreResult<Done> {
    let current = |t: &Tables<'_>, key: &str| -> StoreResult<Option<(Vec<u8>, u64)>> {
        let guard = t.kv.get(key).map_err(unavailable)?;
        Ok(guard.and_then(|g| {
            let stored = g.value();
            let expires = u64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
            decode(stored, now).map(|v| (v.to_vec(), expires))
        }))
    };
    match op {
        Op::Set { key, value, expires, quota } => {
            put_within(t, key, &encode(value, *expires), quota)?;
            Ok(Done::Unit)
        }
        Op::Delete { key } => {
            let existed = current(t, key)?.is_some();
            put(t, key, None)?;
            Ok(Done::Bool(existed))
        }
        Op::Increment { key, delta, quota } => {
            let cur = current(t, key)?;
            let n = parse_counter(cur.as_ref().map(|(v, _)| v.as_slice()))?;
            let next = n.checked_add(*delta).ok_or(StoreError::NotACounter)?;
            // An increment keeps a live key's expiry, like Redis INCRBY.
            let expires = cur.map_or(0, |(_, e)| e);
            put_within(t, key, &encode(next.to_string().as_bytes(), expires), quota)?;
            Ok(Done::Int(next))
        }
        Op::Cas { key, expected, value, quota } => {
            let cur = current(t, key)?.map(|(v, _)| v);
            if cur != *expected {
                return Ok(Done::Bool(false));
            }
            put_within(t, key, &encode(value, 0), quota)?;
            Ok(Done::Bool(true))
        }
    }
}

fn expect_bool(d: Done) -> StoreResult<bool> {
    match d {
        Done::Bool(b) => Ok(b),
        _ => Err(unavailable("unexpected store writer answer")),
    }
}

#[async_trait]
impl Kv for EmbeddedKv {
    fn set_quota(&self, ns: &str, quota: KvQuota) {
        self.quotas.set(ns, quota);
    }

    fn health(&self) -> Option<String> {
        self.file.failing()
    }

    async fn usage(&self, ns: &str) -> StoreResult<KvUsage> {
        let txn = self.file.get()?.begin_read().map_err(unavailable)?;
        let table = txn.open_table(USAGE).map_err(unavailable)?;
        let got = table.get(ns).map_err(unavailable)?;
        Ok(got.map_or_else(KvUsage::default, |g| {
            let (keys, bytes) = g.value();
            KvUsage { keys, bytes }
        }))
    }

    async fn get(&self, ns: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = full_key(ns, key);
        let now = now_ms();
        self.read(|t| {
            Ok(t.get(key.as_str()).map_err(unavailable)?.and_then(|g| decode(g.value(), now).map(<[u8]>::to_vec)))
        })
    }

    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> StoreResult<()> {
        // A TTL rounds up to a whole millisecond and never means "no expiry".
        let expires = ttl.map_or(0, |d| now_ms() + super::ttl_ms(d));
        self.write(Op::Set { key: full_key(ns, key), value, expires, quota: self.quotas.get(ns) }).await.map(|_| ())
    }

    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        expect_bool(self.write(Op::Delete { key: full_key(ns, key) }).await?)
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        match self.write(Op::Increment { key: full_key(ns, key), delta, quota: self.quotas.get(ns) }).await? {
            Done::Int(n) => Ok(n),
            _ => Err(unavailable("unexpected store writer answer")),
        }
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> StoreResult<bool> {
        let quota = self.quotas.get(ns);
        let op = Op::Cas { key: full_key(ns, key), expected: expected.map(<[u8]>::to_vec), value, quota };
        expect_bool(self.write(op).await?)
    }

    async fn list_keys(&self, ns: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let base = full_key(ns, "");
        let start = match cursor {
            Some(c) if c >= prefix => Bound::Excluded(full_key(ns, c)),
            _ => Bound::Included(full_key(ns, prefix)),
        };
        let now = now_ms();
        self.read(|t| {
            let mut keys = Vec::new();
            let range = t.range::<&str>((start.as_ref().map(String::as_str), Bound::Unbounded)).map_err(unavailable)?;
            for entry in range {
                let (k, v) = entry.map_err(unavailable)?;
                let Some(key) = k.value().strip_prefix(base.as_str()) else { break };
                if !key.starts_with(prefix) || keys.len() >= limit {
                    break;
                }
                if decode(v.value(), now).is_some() {
                    keys.push(key.to_string());
                }
            }
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn count<K: redb::Key + 'static, V: redb::Value + 'static>(db: &Database, t: TableDefinition<K, V>) -> u64 {
        ReadableTableMetadata::len(&db.begin_read().unwrap().open_table(t).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn expired_keys_are_reclaimed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kv = EmbeddedKv::open(dir.path()).unwrap();
        let ms = |n| Some(Duration::from_millis(n));
        // At once, so that they share commits.
        let keys: Vec<String> = (0..3000).map(|i| format!("gone{i}")).collect();
        let sets = keys.iter().map(|k| kv.set("x", k, b"v".to_vec(), ms(1)));
        for r in futures_util::future::join_all(sets).await {
            r.unwrap();
        }
        kv.set("x", "live", b"v".to_vec(), None).await.unwrap();
        kv.set("x", "later", b"v".to_vec(), ms(3_600_000)).await.unwrap();
        kv.set("x", "rewritten", b"v".to_vec(), ms(60_000)).await.unwrap();
        kv.set("x", "rewritten", b"w".to_vec(), None).await.unwrap();
        kv.set("x", "counter", b"1".to_vec(), ms(60_000)).await.unwrap();
        kv.compare_and_swap("x", "counter", Some(b"1"), b"2".to_vec()).await.unwrap();
        assert_eq!(count(&kv.file.get().unwrap(), KV), 3004);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // In batches of at most 1,024 (the idle writer may sweep some too).
        let now = now_ms();
        let mut rounds = 0;
        loop {
            let n = sweep(&kv.file.get().unwrap(), now).unwrap();
            assert!(n <= SWEEP_BATCH);
            if n == 0 {
                break;
            }
            rounds += 1;
            assert!(rounds <= 3, "3,000 expired keys take at most 3 sweeps");
        }
        assert_eq!(count(&kv.file.get().unwrap(), KV), 4, "live, later, rewritten, counter");
        assert_eq!(count(&kv.file.get().unwrap(), EXPIRY), 1, "later's expiry");
        assert_eq!(kv.get("x", "rewritten").await.unwrap(), Some(b"w".to_vec()));
        assert_eq!(kv.get("x", "counter").await.unwrap(), Some(b"2".to_vec()), "a swap clears the expiry");
        assert_eq!(kv.list_keys("x", "", None, 10).await.unwrap(), ["counter", "later", "live", "rewritten"]);
    }

    #[tokio::test]
    async fn the_writer_reclaims_by_itself_while_busy_and_an_old_file_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        // A file as written before the expiry index: only the kv table.
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(KV).unwrap();
                t.insert(full_key("x", "old").as_str(), encode(b"v", 1).as_slice()).unwrap();
                t.insert(full_key("x", "kept").as_str(), encode(b"v", 0).as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let kv = EmbeddedKv::open(dir.path()).unwrap();
        assert_eq!(count(&kv.file.get().unwrap(), EXPIRY), 1, "indexed at open");
        // "old" + "v" and "kept" + "v", counted at open (the expired one until it is reclaimed).
        assert_eq!(kv.usage("x").await.unwrap(), KvUsage { keys: 2, bytes: 9 });
        kv.set("x", "soon", b"v".to_vec(), Some(Duration::from_millis(1))).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Writes keep coming (the writer is never idle for a second).
        while count(&kv.file.get().unwrap(), KV) > 2 {
            assert!(std::time::Instant::now() < deadline, "the writer did not sweep within 10 s");
            kv.set("x", "busy", b"v".to_vec(), None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(kv.get("x", "kept").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(kv.usage("x").await.unwrap(), KvUsage { keys: 2, bytes: 10 }, "kept and busy");
        drop(kv);
        let kv = EmbeddedKv::open(dir.path()).unwrap();
        assert_eq!(count(&kv.file.get().unwrap(), EXPIRY), 0, "indexed once, not again");
    }
}
