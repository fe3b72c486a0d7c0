//! Channel history: the [`History`] back-end trait, and the local back end
//! ([`LocalHistory`]) that keeps every channel's publications in memory,
//! optionally written behind to a redb file (`history_file.rs`) so that a
//! restart keeps them with the same epoch.
//!
//! In memory, a channel's offset, epoch and kept publications are one
//! [`Log`] behind the lock of its map shard: an append assigns the next
//! offset, keeps the publication and hands it to the caller's `deliver`
//! under that lock, so one channel's publications reach this host's members
//! in offset order however many tasks publish at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;

use super::history_file::{HistoryFile, Loaded};
use super::{StoreResult, now_ms};
use crate::handler::Message;
use crate::history::{self, Limits, Page, Position, Publication};

/// What to append: a message as it is, or the inside of a JSON object (after
/// its `{`) that the position is stamped into (`history::stamp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Kept and delivered as it is.
    Plain(Message),
    /// Kept and delivered as the object with `"offset"` and `"epoch"` first.
    Stamped(String),
}

/// Called with each appended publication, in offset order per channel.
pub type Deliver<'a> = &'a (dyn Fn(&Position, &Message) + Send + Sync);

/// Where channels keep their publications.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Appends to `channel`, which keeps `limits`, and answers the
    /// publication's position. A back end whose publications reach this
    /// host's members only through this call (memory, embedded) calls
    /// `deliver` with the publication while no other append to `channel`
    /// runs; the Redis back end publishes to every host, this one included,
    /// in the same atomic step, and does not call it.
    async fn append(&self, channel: &str, limits: Limits, entry: Entry, deliver: Deliver<'_>) -> StoreResult<Position>;

    /// The publications of `channel` after `since` (or the last ones), at
    /// most `limit`, oldest first.
    async fn read(&self, channel: &str, limits: Limits, since: Option<&Position>, limit: usize) -> StoreResult<Page>;
}

/// One kept publication.
#[derive(Clone, Debug)]
pub(super) struct Kept {
    pub offset: u64,
    pub at_ms: u64,
    pub msg: Message,
}

/// One channel's history.
#[derive(Debug)]
pub(super) struct Log {
    pub epoch: Arc<str>,
    /// The last offset given out (0: none in this epoch).
    pub top: u64,
    pub kept: VecDeque<Kept>,
    /// Payload bytes of `kept`.
    pub bytes: usize,
    /// When the last publication was made.
    pub last_ms: u64,
}

impl Log {
    fn new(now: u64) -> Log {
        Log { epoch: history::new_epoch(), top: 0, kept: VecDeque::new(), bytes: 0, last_ms: now }
    }

    /// Drops what is over `limits` at `now`, oldest first.
    fn trim(&mut self, limits: &Limits, now: u64) {
        let ttl = limits.ttl.as_millis() as u64;
        while let Some(front) = self.kept.front() {
            let expired = front.at_ms.saturating_add(ttl) <= now;
            if !(expired || self.kept.len() > limits.size || self.bytes > limits.max_bytes) {
                break;
            }
            self.bytes -= history::size(&front.msg);
            self.kept.pop_front();
        }
    }

    /// Whether it holds nothing anyone could still ask for.
    fn stale(&self, now: u64) -> bool {
        self.kept.is_empty() && self.last_ms.saturating_add(history::META_TTL.as_millis() as u64) <= now
    }

    fn position(&self) -> Position {
        Position { offset: self.top, epoch: self.epoch.clone() }
    }

    /// The offset of the oldest publication kept (`top + 1` when none is).
    fn first_kept(&self) -> u64 {
        self.kept.front().map_or(self.top + 1, |k| k.offset)
    }

    fn page(&self, since: Option<&Position>, limit: usize) -> Page {
        let latest = self.position();
        let (from, recovered) = match since {
            None => {
                let n = self.kept.len().min(limit);
                return Page { publications: self.slice(self.kept.len() - n, n), latest, recovered: true };
            }
            Some(p) if p.epoch != self.epoch || p.offset > self.top => (self.kept.len(), false),
            Some(p) => {
                let first = self.first_kept();
                let skip = p.offset.saturating_add(1).saturating_sub(first).min(self.kept.len() as u64) as usize;
                (skip, p.offset + 1 >= first)
            }
        };
        Page { publications: self.slice(from, limit), latest, recovered }
    }

    fn slice(&self, from: usize, limit: usize) -> Vec<Publication> {
        self.kept.range(from..).take(limit).map(|k| Publication { offset: k.offset, msg: k.msg.clone() }).collect()
    }
}

/// How many appends pass between two sweeps of channels nobody touches.
const SWEEP_EVERY: u64 = 1024;

/// Every channel's history in this process, written behind to a file when
/// the store is embedded.
pub struct LocalHistory {
    logs: DashMap<String, Log>,
    file: Option<HistoryFile>,
    appends: AtomicU64,
}

impl LocalHistory {
    /// History in memory only: gone when the process exits.
    pub fn memory() -> Self {
        LocalHistory { logs: DashMap::new(), file: None, appends: AtomicU64::new(0) }
    }

    /// History in `<data_dir>/history.redb`, loaded now. After a stop that
    /// did not write everything (a crash), every channel starts a new epoch.
    pub fn embedded(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let (file, Loaded { logs, clean }) = HistoryFile::open(data_dir)?;
        let map = DashMap::new();
        for (channel, mut log) in logs {
            if !clean {
                log.epoch = history::new_epoch();
                file.epoch(&channel, &log);
            }
            map.insert(channel, log);
        }
        if !clean && !map.is_empty() {
            tracing::warn!(
                channels = map.len(),
                "channel history was not written completely before the last stop: every channel starts a new epoch"
            );
        }
        Ok(LocalHistory { logs: map, file: Some(file), appends: AtomicU64::new(0) })
    }

    /// Forgets channels whose publications have all expired and whose
    /// offset has outlived [`history::META_TTL`].
    fn sweep(&self, now: u64) {
        self.logs.retain(|channel, log| {
            let keep = !log.stale(now);
            if !keep && let Some(file) = &self.file {
                file.forget(channel);
            }
            keep
        });
    }
}

#[async_trait]
impl History for LocalHistory {
    async fn append(&self, channel: &str, limits: Limits, entry: Entry, deliver: Deliver<'_>) -> StoreResult<Position> {
        let now = now_ms();
        if self.appends.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
        let mut log = self.logs.entry(channel.to_string()).or_insert_with(|| Log::new(now));
        if log.stale(now) {
            *log = Log::new(now);
        }
        log.top += 1;
        log.last_ms = now;
        let pos = log.position();
        let msg = match entry {
            Entry::Plain(m) => m,
            Entry::Stamped(body) => Message::Text(history::stamp(&body, &pos)),
        };
        if history::size(&msg) > limits.max_bytes {
            // Larger than the channel may keep: delivered, not kept.
            log.trim(&limits, now);
            if let Some(file) = &self.file {
                file.append(channel, &log, None);
            }
            deliver(&pos, &msg);
            return Ok(pos);
        }
        deliver(&pos, &msg);
        log.bytes += history::size(&msg);
        log.kept.push_back(Kept { offset: pos.offset, at_ms: now, msg });
        log.trim(&limits, now);
        if let Some(file) = &self.file {
            file.append(channel, &log, log.kept.back().filter(|k| k.offset == pos.offset));
        }
        Ok(pos)
    }

    async fn read(&self, channel: &str, limits: Limits, since: Option<&Position>, limit: usize) -> StoreResult<Page> {
        let now = now_ms();
        let mut log = self.logs.entry(channel.to_string()).or_insert_with(|| Log::new(now));
        log.trim(&limits, now);
        Ok(log.page(since, limit.min(history::MAX_READ.max(limits.size))))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    pub(crate) const LIMITS: Limits = Limits { size: 5, ttl: Duration::from_secs(600), max_bytes: 1 << 20 };

    fn text(s: &str) -> Entry {
        Entry::Plain(Message::Text(s.into()))
    }

    fn offsets(page: &Page) -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    }

    /// The behaviour every back end shares.
    pub(crate) async fn suite(h: &dyn History, channel: &str) {
        let delivered = Mutex::new(Vec::new());
        let deliver = |p: &Position, m: &Message| delivered.lock().unwrap().push((p.offset, m.clone()));
        let empty = h.read(channel, LIMITS, None, 10).await.unwrap();
        assert_eq!((empty.latest.offset, empty.recovered, empty.publications.len()), (0, true, 0));
        let epoch = empty.latest.epoch.clone();
        for i in 1..=7 {
            let pos = h.append(channel, LIMITS, text(&format!("m{i}")), &deliver).await.unwrap();
            assert_eq!(pos, Position { offset: i, epoch: epoch.clone() }, "offsets grow by one in one epoch");
        }
        let at = |offset| Some(Position { offset, epoch: epoch.clone() });

        let last = h.read(channel, LIMITS, None, 3).await.unwrap();
        assert_eq!(offsets(&last), [5, 6, 7], "without since: the last ones");
        assert_eq!(last.publications[0].msg, Message::Text("m5".into()));
        assert_eq!(last.latest.offset, 7);

        let after = h.read(channel, LIMITS, at(4).as_ref(), 10).await.unwrap();
        assert_eq!((offsets(&after), after.recovered), (vec![5, 6, 7], true));
        let first_kept = h.read(channel, LIMITS, at(2).as_ref(), 10).await.unwrap();
        assert_eq!((offsets(&first_kept), first_kept.recovered), (vec![3, 4, 5, 6, 7], true), "size 5 keeps 3..=7");
        let too_old = h.read(channel, LIMITS, at(1).as_ref(), 10).await.unwrap();
        assert_eq!((offsets(&too_old), too_old.recovered), (vec![3, 4, 5, 6, 7], false), "2 is gone");
        let up_to_date = h.read(channel, LIMITS, at(7).as_ref(), 10).await.unwrap();
        assert_eq!((offsets(&up_to_date), up_to_date.recovered), (vec![], true), "nothing missed");
        let paged = h.read(channel, LIMITS, at(3).as_ref(), 2).await.unwrap();
        assert_eq!((offsets(&paged), paged.recovered), (vec![4, 5], true));
        let other = Position { offset: 4, epoch: "another".into() };
        let lost = h.read(channel, LIMITS, Some(&other), 10).await.unwrap();
        assert_eq!((offsets(&lost), lost.recovered), (vec![], false), "another epoch");
        let future = h.read(channel, LIMITS, at(9).as_ref(), 10).await.unwrap();
        assert!(!future.recovered, "an offset never given out");

        let stamped = h.append(channel, LIMITS, Entry::Stamped(r#""say":"hi"}"#.into()), &deliver).await.unwrap();
        let page = h.read(channel, LIMITS, at(7).as_ref(), 10).await.unwrap();
        let want = format!(r#"{{"offset":8,"epoch":"{epoch}","say":"hi"}}"#);
        assert_eq!(page.publications[0].msg, Message::Text(want));
        assert_eq!(stamped.offset, 8);

        let small = Limits { max_bytes: 4, ..LIMITS };
        h.append(channel, small, text("12345"), &deliver).await.unwrap();
        let page = h.read(channel, small, at(0).as_ref(), 10).await.unwrap();
        assert_eq!((offsets(&page), page.recovered), (vec![], false), "over the byte cap, nothing is kept");
        h.append(channel, small, text("1234"), &deliver).await.unwrap();
        assert_eq!(offsets(&h.read(channel, small, at(9).as_ref(), 10).await.unwrap()), [10]);

        let other_channel = format!("{channel}-2");
        let pos = h.append(&other_channel, LIMITS, text("x"), &deliver).await.unwrap();
        assert_eq!(pos.offset, 1, "each channel has its own offsets");
        assert_ne!(pos.epoch, epoch);
    }

    #[tokio::test]
    async fn memory_history_keeps_offsets_pages_and_delivers_in_order() {
        let h = LocalHistory::memory();
        suite(&h, "c:room").await;
        let delivered = Mutex::new(Vec::new());
        let deliver = |p: &Position, _: &Message| delivered.lock().unwrap().push(p.offset);
        h.append("c:order", LIMITS, text("a"), &deliver).await.unwrap();
        h.append("c:order", LIMITS, text("b"), &deliver).await.unwrap();
        assert_eq!(*delivered.lock().unwrap(), [1, 2]);
    }

    #[tokio::test]
    async fn publications_expire_and_the_offset_outlives_them() {
        let h = LocalHistory::memory();
        let short = Limits { ttl: Duration::from_millis(50), ..LIMITS };
        let deliver = |_: &Position, _: &Message| {};
        let pos = h.append("c:t", short, text("a"), &deliver).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let page = h.read("c:t", short, Some(&Position { offset: 0, ..pos.clone() }), 10).await.unwrap();
        assert_eq!((page.publications.len(), page.recovered), (0, false), "1 expired: a client at 0 missed it");
        let page = h.read("c:t", short, Some(&pos), 10).await.unwrap();
        assert!(page.recovered, "a client at 1 missed nothing");
        let next = h.append("c:t", short, text("b"), &deliver).await.unwrap();
        assert_eq!(next, Position { offset: 2, epoch: pos.epoch }, "the same epoch goes on");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_deliver_in_offset_order() {
        let h = Arc::new(LocalHistory::memory());
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (h, delivered) = (h.clone(), delivered.clone());
                tokio::spawn(async move {
                    for _ in 0..500 {
                        let d = |p: &Position, _: &Message| delivered.lock().unwrap().push(p.offset);
                        h.append("c:race", LIMITS, text("x"), &d).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*delivered.lock().unwrap(), (1..=2000).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn embedded_history_survives_a_restart_with_its_epoch_and_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let deliver = |_: &Position, _: &Message| {};
        let pos = {
            let h = LocalHistory::embedded(dir.path()).unwrap();
            suite(&h, "c:room").await;
            for i in 0..3 {
                h.append("c:kept", LIMITS, text(&format!("k{i}")), &deliver).await.unwrap();
            }
            h.append("c:kept", LIMITS, Entry::Plain(Message::Binary(vec![0, 255])), &deliver).await.unwrap()
        };
        // A clean stop (the store dropped): the same epoch, the same publications.
        let h = LocalHistory::embedded(dir.path()).unwrap();
        let page = h.read("c:kept", LIMITS, Some(&Position { offset: 1, ..pos.clone() }), 10).await.unwrap();
        assert!(page.recovered);
        assert_eq!(page.latest, pos);
        let msgs: Vec<Message> = page.publications.iter().map(|p| p.msg.clone()).collect();
        assert_eq!(msgs, [Message::Text("k1".into()), Message::Text("k2".into()), Message::Binary(vec![0, 255])]);
        let next = h.append("c:kept", LIMITS, text("after"), &deliver).await.unwrap();
        assert_eq!(next, Position { offset: 5, epoch: pos.epoch.clone() }, "offsets go on");
        drop(h);

        // A stop that did not mark the file clean (a crash): new epochs, so a
        // client's old position says "history lost"; the offsets go on.
        {
            let db = redb::Database::create(dir.path().join(super::super::history_file::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap().insert("clean", 0).unwrap();
            txn.commit().unwrap();
        }
        let h = LocalHistory::embedded(dir.path()).unwrap();
        let page = h.read("c:kept", LIMITS, Some(&next), 10).await.unwrap();
        assert!(!page.recovered, "the old epoch is not served");
        assert_ne!(page.latest.epoch, pos.epoch);
        assert_eq!(page.latest.offset, 5);
        let page = h.read("c:kept", LIMITS, None, 10).await.unwrap();
        assert_eq!(page.publications.len(), 5, "what reached the disk is still there");
    }
}
