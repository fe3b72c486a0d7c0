//! The embedded key/value back end: a redb database file in the data
//! directory. A write is acknowledged only after its transaction commits
//! with fsync; concurrent writes share one commit (group commit) through a
//! single writer thread, which also makes increment and compare-and-swap
//! atomic.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::Kv;
use super::{StoreError, StoreResult, now_ms, parse_counter};

/// Keys are `namespace \0 key`; values are an 8-byte big-endian expiry
/// (Unix milliseconds, 0 for none) followed by the value's bytes.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// The database file inside the data directory.
pub const FILE_NAME: &str = "wharf.redb";

/// Most writes folded into one commit.
const MAX_BATCH: usize = 1024;

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

/// The value, if the stored bytes are well formed and not expired at `now`.
fn decode(stored: &[u8], now: u64) -> Option<&[u8]> {
    let (head, value) = stored.split_at_checked(8)?;
    let expires = u64::from_be_bytes(head.try_into().ok()?);
    (expires == 0 || expires > now).then_some(value)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

enum Op {
    Set { key: String, value: Vec<u8>, expires: u64 },
    Delete { key: String },
    Increment { key: String, delta: i64 },
    Cas { key: String, expected: Option<Vec<u8>>, value: Vec<u8> },
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
    db: Arc<Database>,
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
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path)
            .with_context(|| format!("opening the embedded store {} (is it a Wharf database?)", path.display()))?;
        let txn = db.begin_write().with_context(|| format!("writing to the embedded store {}", path.display()))?;
        txn.open_table(KV).with_context(|| format!("opening the kv table in {}", path.display()))?;
        txn.commit().with_context(|| format!("committing to the embedded store {}", path.display()))?;
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel();
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-store-writer".into())
            .spawn(move || write_loop(&writer_db, jobs))
            .context("starting the store writer thread")?;
        Ok(EmbeddedKv { db, writer: Some(writer), thread: Some(thread) })
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
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(KV).map_err(unavailable)?;
        f(&table)
    }
}

/// Applies queued writes in batches: one transaction and one fsync each.
fn write_loop(db: &Database, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = apply_batch(db, &batch);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

fn apply_batch(db: &Database, batch: &[Job]) -> Vec<StoreResult<Done>> {
    let fail = |e: &dyn std::fmt::Display| batch.iter().map(|_| Err(unavailable(e))).collect();
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return fail(&e),
    };
    let results = {
        let mut table = match txn.open_table(KV) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let now = now_ms();
        batch.iter().map(|job| apply(&mut table, &job.op, now)).collect::<Vec<_>>()
    };
    match txn.commit() {
        Ok(()) => results,
        Err(e) => fail(&e),
    }
}

fn apply(table: &mut redb::Table<&'static str, &'static [u8]>, op: &Op, now: u64) -> StoreResult<Done> {
    let current =
        |table: &redb::Table<&'static str, &'static [u8]>, key: &str| -> StoreResult<Option<(Vec<u8>, u64)>> {
            let guard = table.get(key).map_err(unavailable)?;
            Ok(guard.and_then(|g| {
                let stored = g.value();
                let expires = u64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
                decode(stored, now).map(|v| (v.to_vec(), expires))
            }))
        };
    match op {
        Op::Set { key, value, expires } => {
            table.insert(key.as_str(), encode(value, *expires).as_slice()).map_err(unavailable)?;
            Ok(Done::Unit)
        }
        Op::Delete { key } => {
            let existed = current(table, key)?.is_some();
            table.remove(key.as_str()).map_err(unavailable)?;
            Ok(Done::Bool(existed))
        }
        Op::Increment { key, delta } => {
            let cur = current(table, key)?;
            let n = parse_counter(cur.as_ref().map(|(v, _)| v.as_slice()))?;
            let next = n.checked_add(*delta).ok_or(StoreError::NotACounter)?;
            // An increment keeps a live key's expiry, like Redis INCRBY.
            let expires = cur.map_or(0, |(_, e)| e);
            table.insert(key.as_str(), encode(next.to_string().as_bytes(), expires).as_slice()).map_err(unavailable)?;
            Ok(Done::Int(next))
        }
        Op::Cas { key, expected, value } => {
            let cur = current(table, key)?.map(|(v, _)| v);
            if cur != *expected {
                return Ok(Done::Bool(false));
            }
            table.insert(key.as_str(), encode(value, 0).as_slice()).map_err(unavailable)?;
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
        self.write(Op::Set { key: full_key(ns, key), value, expires }).await.map(|_| ())
    }

    async fn delete(&self, ns: &str, key: &str) -> StoreResult<bool> {
        expect_bool(self.write(Op::Delete { key: full_key(ns, key) }).await?)
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> StoreResult<i64> {
        match self.write(Op::Increment { key: full_key(ns, key), delta }).await? {
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
        let op = Op::Cas { key: full_key(ns, key), expected: expected.map(<[u8]>::to_vec), value };
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
