//! The embedded store's channel history on disk: `<data_dir>/history.redb`,
//! written behind by one thread that folds the changes of a few
//! milliseconds into one transaction (so a busy channel costs a commit per
//! `FLUSH_EVERY`, not one per publication), and makes them durable (an
//! fsync) at most once per `SYNC_EVERY`, and when it falls idle.
//! Publications are served from memory (`history.rs`); this file only
//! brings them back at start-up.
//!
//! A stop that wrote everything (the store was dropped: a clean shutdown)
//! marks the file clean. At open, a file not marked clean may have lost its
//! last publications, so its channels start new epochs: a client holding a
//! position of the old one learns that history was lost instead of
//! silently missing what never reached the disk.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use redb::{Database, ReadableTable, TableDefinition};

use super::history::{Kept, Log};
use crate::handler::Message;

/// `channel → (epoch, top offset, last publication ms)`.
const CHANNELS: TableDefinition<&str, (&str, u64, u64)> = TableDefinition::new("channels");
/// `(channel, offset) → at_ms (8 bytes, big-endian), kind (1: text, 2: binary), payload`.
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// `clean` = 1 when the last stop wrote everything.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The file's name in the data directory.
pub const FILE_NAME: &str = "history.redb";

/// Most changes folded into one transaction.
const MAX_BATCH: usize = 4096;

/// How long the writer gathers changes after the first one of a batch.
/// The file is written behind anyway (a crash starts new epochs), so this
/// delays nothing a client sees.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// How often a busy writer's commits are made durable; the others are
/// written without an fsync (redb's `Durability::None`), which a crash may
/// undo, as it may undo what was still queued: either way the file is not
/// marked clean and the next start begins new epochs.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A channel's state as its last change left it.
struct Meta {
    epoch: Arc<str>,
    top: u64,
    last_ms: u64,
    /// Older entries go.
    first_kept: u64,
}

enum Op {
    /// A channel's state changed, with the publication that changed it
    /// when it is kept (offset, ms, message).
    Meta { channel: String, meta: Meta, put: Option<(u64, u64, Message)> },
    /// A channel forgotten.
    Forget { channel: String },
}

/// What the file held at open.
pub(super) struct Loaded {
    pub logs: Vec<(String, Log)>,
    /// Whether the last stop wrote everything.
    pub clean: bool,
}

/// The writer thread's queue.
pub(super) struct HistoryFile {
    ops: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HistoryFile {
    /// Writes what is queued, marks the file clean and closes it.
    fn drop(&mut self) {
        self.ops.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn encode(at_ms: u64, msg: &Message) -> Vec<u8> {
    let (kind, payload) = match msg {
        Message::Text(t) => (1u8, t.as_bytes()),
        Message::Binary(b) => (2u8, b.as_slice()),
    };
    let mut v = Vec::with_capacity(9 + payload.len());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.push(kind);
    v.extend_from_slice(payload);
    v
}

fn decode(offset: u64, stored: &[u8]) -> Option<Kept> {
    let (head, payload) = stored.split_at_checked(9)?;
    let at_ms = u64::from_be_bytes(head[..8].try_into().ok()?);
    let msg = match head[8] {
        1 => Message::Text(String::from_utf8(payload.to_vec()).ok()?),
        2 => Message::Binary(payload.to_vec()),
        _ => return None,
    };
    Some(Kept { offset, at_ms, msg })
}

fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let txn = db.begin_write()?;
    let clean;
    let mut logs = Vec::new();
    {
        let mut meta = txn.open_table(META)?;
        clean = meta.get("clean")?.map(|v| v.value()) == Some(1);
        meta.insert("clean", 0)?;
        let channels = txn.open_table(CHANNELS)?;
        let entries = txn.open_table(ENTRIES)?;
        for row in channels.iter()? {
            let (channel, value) = row?;
            let channel = channel.value().to_string();
            let (epoch, top, last_ms) = value.value();
            let mut kept = VecDeque::new();
            let mut bytes = 0;
            for row in entries.range((channel.as_str(), 0)..=(channel.as_str(), top))? {
                let (key, stored) = row?;
                if let Some(k) = decode(key.value().1, stored.value()) {
                    bytes += crate::history::size(&k.msg);
                    kept.push_back(k);
                }
            }
            logs.push((channel, Log { epoch: Arc::from(epoch), top, kept, bytes, last_ms }));
        }
    }
    txn.commit()?;
    Ok(Loaded { logs, clean })
}

/// Writes `batch` in one transaction, durable when `sync`.
fn apply(db: &Database, batch: &[Op], sync: bool) -> Result<(), redb::Error> {
    // A channel's epoch and first kept offset are written once per batch,
    // as the last change of the batch left them.
    let mut metas: HashMap<&str, &Meta> = HashMap::new();
    let mut txn = db.begin_write()?;
    if !sync {
        txn.set_durability(redb::Durability::None).map_err(redb::Error::from)?;
    }
    {
        let mut channels = txn.open_table(CHANNELS)?;
        let mut entries = txn.open_table(ENTRIES)?;
        for op in batch {
            match op {
                Op::Meta { channel, meta, put } => {
                    if let Some((offset, at_ms, msg)) = put {
                        entries.insert((channel.as_str(), *offset), encode(*at_ms, msg).as_slice())?;
                    }
                    metas.insert(channel.as_str(), meta);
                }
                Op::Forget { channel } => {
                    metas.remove(channel.as_str());
                    channels.remove(channel.as_str())?;
                    entries.retain_in((channel.as_str(), 0)..=(channel.as_str(), u64::MAX), |_, _| false)?;
                }
            }
        }
        for (channel, m) in metas {
            channels.insert(channel, (&*m.epoch, m.top, m.last_ms))?;
            entries.retain_in((channel, 0)..(channel, m.first_kept), |_, _| false)?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn write_loop(db: Database, ops: mpsc::Receiver<Op>) {
    let mut lost = false;
    let mut batch = Vec::new();
    // Whether a commit since the last durable one may not be on disk yet.
    let mut unsynced = false;
    let mut synced_at = Instant::now();
    let mut open = true;
    while open {
        let first = if unsynced {
            match ops.recv_timeout(SYNC_EVERY.saturating_sub(synced_at.elapsed())) {
                Ok(op) => Some(op),
                // Idle with commits not on disk: make them durable now.
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match ops.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            }
        };
        if let Some(op) = first {
            batch.push(op);
            open = gather(&ops, &mut batch);
        }
        let sync = synced_at.elapsed() >= SYNC_EVERY || batch.is_empty();
        match apply(&db, &batch, sync) {
            Ok(()) if sync => (unsynced, synced_at) = (false, Instant::now()),
            Ok(()) => unsynced = true,
            Err(e) => {
                if !lost {
                    tracing::error!(error = %e, "writing channel history failed; the next start begins new epochs");
                }
                lost = true;
            }
        }
        batch.clear();
    }
    if lost {
        return;
    }
    let mark = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert("clean", 1)?;
        txn.commit()?;
        Ok(())
    };
    if let Err(e) = mark() {
        tracing::error!(error = %e, "marking the channel history file clean failed");
    }
}

/// Adds to `batch` what arrives within `FLUSH_EVERY`; `false` when the
/// store was dropped (the batch is then the last one).
fn gather(ops: &mpsc::Receiver<Op>, batch: &mut Vec<Op>) -> bool {
    let until = Instant::now() + FLUSH_EVERY;
    while batch.len() < MAX_BATCH {
        match ops.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(op) => batch.push(op),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
    true
}

impl HistoryFile {
    /// Opens (or creates) the file and loads it; the writer starts.
    pub(super) fn open(data_dir: &Path) -> anyhow::Result<(HistoryFile, Loaded)> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path)
            .with_context(|| format!("opening the channel history {} (is it a Wharf file?)", path.display()))?;
        let loaded = load(&db).with_context(|| format!("reading the channel history {}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wharf-history".into())
            .spawn(move || write_loop(db, rx))
            .context("starting the channel history writer")?;
        Ok((HistoryFile { ops: Some(tx), thread: Some(thread) }, loaded))
    }

    fn send(&self, op: Op) {
        if let Some(ops) = &self.ops {
            let _ = ops.send(op);
        }
    }

    /// A publication appended to `log` (`kept`, when it is kept).
    pub(super) fn append(&self, channel: &str, log: &Log, kept: Option<&Kept>) {
        let put = kept.map(|k| (k.offset, k.at_ms, k.msg.clone()));
        self.send(Op::Meta { channel: channel.to_string(), meta: Self::meta(log), put });
    }

    /// `log`'s epoch, offset and first kept publication.
    pub(super) fn epoch(&self, channel: &str, log: &Log) {
        self.send(Op::Meta { channel: channel.to_string(), meta: Self::meta(log), put: None });
    }

    fn meta(log: &Log) -> Meta {
        let first_kept = log.kept.front().map_or(log.top + 1, |k| k.offset);
        Meta { epoch: log.epoch.clone(), top: log.top, last_ms: log.last_ms, first_kept }
    }

    /// A channel forgotten.
    pub(super) fn forget(&self, channel: &str) {
        self.send(Op::Forget { channel: channel.to_string() });
    }
}
