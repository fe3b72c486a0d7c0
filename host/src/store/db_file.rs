//! The embedded store's database file, and its recovery. After an I/O error
//! (a full disk, typically) redb refuses every later write ("Previous I/O
//! error occurred") until the database is closed and opened again; the
//! writer thread does that by itself once the disk takes writes again, and
//! until then the store reports why it is failing (`/healthz`). Only
//! committed transactions were ever acknowledged, and a re-open keeps
//! exactly those.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use redb::Database;

use super::{StoreError, StoreResult};

/// Prepares a database's tables once it is open (in one write transaction).
pub(super) type Init = fn(&redb::WriteTransaction) -> Result<(), redb::Error>;

/// How long a re-open waits for readers to let go of the old handle.
const READERS_WAIT: Duration = Duration::from_secs(1);
/// Bytes written (and removed) to learn whether the disk takes writes again.
const PROBE_BYTES: usize = 64 << 10;
/// The probe's file name in the data directory.
const PROBE_FILE: &str = ".wharf-space-probe";

/// The open database, and whether writes to it fail now.
pub(super) struct DbFile {
    path: PathBuf,
    init: Init,
    /// `None` while it is being opened again.
    db: RwLock<Option<Arc<Database>>>,
    /// Why writes fail, from the first failure until a write succeeds.
    failing: Mutex<Option<String>>,
}

fn open_db(path: &Path, init: Init) -> anyhow::Result<Database> {
    let db = Database::create(path)
        .with_context(|| format!("opening the embedded store {} (is it a Wharf database?)", path.display()))?;
    let txn = db.begin_write().with_context(|| format!("writing to the embedded store {}", path.display()))?;
    init(&txn).with_context(|| format!("indexing the keys of {}", path.display()))?;
    txn.commit().with_context(|| format!("committing to the embedded store {}", path.display()))?;
    Ok(db)
}

impl DbFile {
    /// Opens (or creates) the database at `path` and runs `init` on it.
    pub(super) fn open(path: PathBuf, init: Init) -> anyhow::Result<DbFile> {
        let db = open_db(&path, init)?;
        Ok(DbFile { path, init, db: RwLock::new(Some(Arc::new(db))), failing: Mutex::new(None) })
    }

    /// The database, unless it is being opened again.
    pub(super) fn get(&self) -> StoreResult<Arc<Database>> {
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or_else(|| {
            StoreError::Unavailable(format!("the embedded store is recovering: {}", self.failing().unwrap_or_default()))
        })
    }

    /// Why writes fail now, if they do.
    pub(super) fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records that a write failed, and why.
    pub(super) fn failed(&self, why: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.is_none() {
            tracing::error!(path = %self.path.display(), reason = why, "embedded store writes fail; they are refused until the store recovers");
        }
        *failing = Some(why.to_string());
    }

    /// Records that a write succeeded.
    pub(super) fn succeeded(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.take().is_some() {
            tracing::info!(path = %self.path.display(), "embedded store writes succeed again");
        }
    }

    /// Whether the data directory takes a write of [`PROBE_BYTES`] now.
    fn disk_takes_writes(&self) -> Result<(), String> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(PROBE_FILE);
        let result = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(&[0; PROBE_BYTES]).and_then(|()| f.sync_all()))
            .map_err(|e| format!("the data directory does not take writes yet: {e}"));
        let _ = std::fs::remove_file(&probe);
        result
    }

    /// Closes the database and opens it again, once the disk takes writes;
    /// the reason when it cannot yet. The caller (the writer thread) makes
    /// the write that shows whether it worked.
    pub(super) fn reopen(&self) -> Result<(), String> {
        self.disk_takes_writes()?;
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            // Readers hold the handle only for one read.
            let deadline = Instant::now() + READERS_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(shared);
                        return Err("readers still held the database".into());
                    }
                }
            }
        }
        match open_db(&self.path, self.init) {
            Ok(db) => {
                *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                tracing::info!(path = %self.path.display(), "embedded store opened again");
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }
}
