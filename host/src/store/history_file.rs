//! The embedded store's channel history on disk: `<data_dir>/history.redb`,
//! written behind by one thread that folds every change waiting at that
//! moment into one transaction. Publications are served from memory
//! (`history.rs`); this file only brings them back at start-up.
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

enum Op {
    /// A channel's epoch, top offset and first kept offset (older entries go).
    Meta { channel: String, epoch: Arc<str>, top: u64, last_ms: u64, first_kept: u64 },
    /// One kept publication.
    Put { channel: String, offset: u64, at_ms: u64, msg: Message },
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

fn apply(db: &Database, batch: &[Op]) -> Result<(), redb::Error> {
    // A channel's epoch and first kept offset are written once per batch,
    // as the last change of the batch left them.
    let mut metas: HashMap<&str, &Op> = HashMap::new();
    let txn = db.begin_write()?;
    {
        let mut channels = txn.open_table(CHANNELS)?;
        let mut entries = txn.open_table(ENTRIES)?;
        for op in batch {
            match op {
                Op::Put { channel, offset, at_ms, msg } => {
                    entries.insert((channel.as_str(), *offset), encode(*at_ms, msg).as_slice())?;
                }
                Op::Meta { channel, .. } => {
                    metas.insert(channel.as_str(), op);
                }
                Op::Forget { channel } => {
                    metas.remove(channel.as_str());
                    channels.remove(channel.as_str())?;
                    entries.retain_in((channel.as_str(), 0)..=(channel.as_str(), u64::MAX), |_, _| false)?;
                }
            }
        }
        for op in metas.into_values() {
            if let Op::Meta { channel, epoch, top, last_ms, first_kept } = op {
                channels.insert(channel.as_str(), (&**epoch, *top, *last_ms))?;
                entries.retain_in((channel.as_str(), 0)..(channel.as_str(), *first_kept), |_, _| false)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn write_loop(db: Database, ops: mpsc::Receiver<Op>) {
    let mut lost = false;
    let mut batch = Vec::new();
    while let Ok(op) = ops.recv() {
        batch.push(op);
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = apply(&db, &batch) {
            if !lost {
                tracing::error!(error = %e, "writing channel history failed; the next start begins new epochs");
            }
            lost = true;
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
        if let Some(k) = kept {
            let (channel, offset, at_ms, msg) = (channel.to_string(), k.offset, k.at_ms, k.msg.clone());
            self.send(Op::Put { channel, offset, at_ms, msg });
        }
        self.epoch(channel, log);
    }

    /// `log`'s epoch, offset and first kept publication.
    pub(super) fn epoch(&self, channel: &str, log: &Log) {
        let first_kept = log.kept.front().map_or(log.top + 1, |k| k.offset);
        self.send(Op::Meta {
            channel: channel.to_string(),
            epoch: log.epoch.clone(),
            top: log.top,
            last_ms: log.last_ms,
            first_kept,
        });
    }

    /// A channel forgotten.
    pub(super) fn forget(&self, channel: &str) {
        self.send(Op::Forget { channel: channel.to_string() });
    }
}
