//! The embedded store's timers on disk: `<data_dir>/timers.redb`, written by
//! one thread that folds every change waiting at that moment into one
//! transaction, committed with fsync (group commit), then answers each.
//! Timers are served from memory (`timers.rs`); the file brings them back
//! at start-up.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::timers::{Timer, decode, encode};
use super::{StoreError, StoreResult};

/// `(plugin, name) → the timer` (`timers::encode`).
const TIMERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("timers");

/// The file's name in the data directory.
pub const FILE_NAME: &str = "timers.redb";

/// Most changes folded into one transaction.
const MAX_BATCH: usize = 4096;

enum Op {
    Put { plugin: String, name: String, bytes: Vec<u8> },
    Delete { plugin: String, name: String },
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The writer thread's queue.
pub(super) struct TimerFile {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TimerFile {
    /// Writes what is queued and closes the file.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TimerFile {
    /// Opens (or creates) the file and reads every timer it holds, with
    /// its plugin.
    pub(super) fn open(data_dir: &Path) -> anyhow::Result<(TimerFile, Vec<(String, Timer)>)> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(TIMERS)?;
        tx.commit()?;
        let mut loaded = Vec::new();
        {
            let read = db.begin_read()?;
            let table = read.open_table(TIMERS)?;
            for row in table.iter()? {
                let (key, value) = row?;
                let (plugin, name) = key.value();
                match decode(name, value.value()) {
                    Some(t) => loaded.push((plugin.to_string(), t)),
                    None => tracing::warn!(plugin, name, file = %path.display(), "a malformed timer is skipped"),
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        let db = Arc::new(db);
        let thread = std::thread::Builder::new().name("wharf-timers".into()).spawn(move || write(&db, &rx))?;
        Ok((TimerFile { jobs: Some(tx), thread: Some(thread) }, loaded))
    }

    fn send(&self, op: Op) -> impl Future<Output = StoreResult<()>> + Send + 'static {
        let (reply, done) = oneshot::channel();
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(Job { op, reply }).is_ok());
        async move {
            if !sent {
                return Err(StoreError::Unavailable("the timer file is closed".into()));
            }
            done.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the timer writer stopped".into())))
        }
    }

    /// Queues `timer` of `plugin` to be written now; the answer comes once
    /// it is on disk.
    pub(super) fn put(&self, plugin: &str, timer: &Timer) -> impl Future<Output = StoreResult<()>> + Send + 'static {
        self.send(Op::Put { plugin: plugin.to_string(), name: timer.name.clone(), bytes: encode(timer) })
    }

    /// Queues the removal of a timer; the answer comes once it is on disk.
    pub(super) fn delete(&self, plugin: &str, name: &str) -> impl Future<Output = StoreResult<()>> + Send + 'static {
        self.send(Op::Delete { plugin: plugin.to_string(), name: name.to_string() })
    }
}

/// The writer thread: one transaction for every change waiting.
fn write(db: &Database, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let r = commit(db, &batch).map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), file = FILE_NAME, "writing timers failed");
            StoreError::Unavailable(format!("writing timers: {e:#}"))
        });
        for job in batch {
            let _ = job.reply.send(r.clone());
        }
    }
}

fn commit(db: &Database, batch: &[Job]) -> anyhow::Result<()> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(TIMERS)?;
        for job in batch {
            match &job.op {
                Op::Put { plugin, name, bytes } => {
                    table.insert((plugin.as_str(), name.as_str()), bytes.as_slice())?;
                }
                Op::Delete { plugin, name } => {
                    table.remove((plugin.as_str(), name.as_str()))?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
