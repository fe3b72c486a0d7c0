//! Timers as the store keeps them: each plugin's pending timers by name,
//! and the due ones handed to the scheduler under a lease (`Timers::claim`),
//! so that on several hosts exactly one runs each firing and another takes
//! it over when the holder dies before it finished.
//!
//! [`LocalTimers`] keeps them in this process's memory, for the embedded
//! store also in `<data_dir>/timers.redb` (`timer_file.rs`): a set or a
//! cancel returns once it is on disk, so pending timers survive a restart.
//! The Redis back end is `cluster::timers`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::timer_file::TimerFile;
use super::{StoreError, StoreResult};

/// One pending timer of a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// Its name, unique within the plugin.
    pub name: String,
    /// When it is due (after a failed firing: its next attempt), Unix ms.
    pub due_ms: u64,
    /// What `on-timer` is given.
    pub payload: Vec<u8>,
    /// The route of the event that set it (`on-timer`'s broadcasts go
    /// there).
    pub route: Arc<str>,
    /// Failed firings so far.
    pub attempts: u32,
    /// Different for every `set`: a firing's end removes the timer only if
    /// it was not set again meanwhile.
    pub version: u64,
}

/// A version no other `set` has (random, so across hosts too).
pub fn new_version() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

/// A due timer handed to the scheduler, leased to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Its plugin.
    pub plugin: Arc<str>,
    /// The timer as it was claimed.
    pub timer: Timer,
}

/// What a claim found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The timers due now, leased to the caller, earliest first.
    pub due: Vec<Due>,
    /// When the earliest timer still waiting is due (or its lease ends).
    pub next_ms: Option<u64>,
    /// Timers pending in all, the claimed ones included.
    pub pending: u64,
}

/// Resolves once a change is durable (at once on back ends that are
/// durable when they answer, or keep nothing).
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<()>> + Send>>;

/// A change that is durable already.
pub fn durable() -> Durable {
    Box::pin(std::future::ready(Ok(())))
}

/// Every plugin's pending timers.
#[async_trait]
pub trait Timers: Send + Sync + 'static {
    /// Sets `timer` for `plugin`, replacing one of its name; with
    /// [`StoreError::QuotaExceeded`] when that adds a timer to a plugin
    /// that has `max_pending`. Seen by every later call at once; the answer
    /// resolves once it is durable, so that a handler setting many timers
    /// in one event waits for the disk once, at the event's end.
    async fn set_later(&self, plugin: &str, timer: Timer, max_pending: u64) -> StoreResult<Durable>;
    /// Cancels a timer; whether it was pending, and when that is durable.
    async fn cancel_later(&self, plugin: &str, name: &str) -> StoreResult<(bool, Durable)>;
    /// [`Timers::set_later`], durable when it returns.
    async fn set(&self, plugin: &str, timer: Timer, max_pending: u64) -> StoreResult<()> {
        self.set_later(plugin, timer, max_pending).await?.await
    }
    /// [`Timers::cancel_later`], durable when it returns.
    async fn cancel(&self, plugin: &str, name: &str) -> StoreResult<bool> {
        let (found, written) = self.cancel_later(plugin, name).await?;
        written.await?;
        Ok(found)
    }
    /// A pending timer.
    async fn get(&self, plugin: &str, name: &str) -> StoreResult<Option<Timer>>;
    /// A plugin's pending timers by name, after `after`, at most `limit`.
    async fn list(&self, plugin: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Timer>>;
    /// Leases at most `max` timers due at `now_ms` to the caller until
    /// `lease_until_ms`: no other claim gets them before then, unless
    /// they are set again.
    async fn claim(&self, now_ms: u64, lease_until_ms: u64, max: usize) -> StoreResult<Claim>;
    /// A claimed timer ran: it goes, unless it was set again since.
    async fn done(&self, due: &Due) -> StoreResult<()>;
    /// A claimed timer is due again at `at_ms` (its firing failed:
    /// `failed`, one more attempt counted; or it was put off), unless it
    /// was set again since.
    async fn retry(&self, due: &Due, at_ms: u64, failed: bool) -> StoreResult<()>;
    /// Notified when a timer is set through this back end, so that a
    /// waiting scheduler looks again.
    fn changed(&self) -> &Notify;
    /// How often a scheduler must look even when nothing changed here
    /// (other hosts set timers too).
    fn poll_ms(&self) -> u64;
}

/// One timer's bytes in a file or in Redis: version, due, attempts (big
/// endian), the route's length (2 bytes) and bytes, the payload.
pub(crate) fn encode(t: &Timer) -> Vec<u8> {
    let route = t.route.as_bytes();
    let mut v = Vec::with_capacity(22 + route.len() + t.payload.len());
    v.extend_from_slice(&t.version.to_be_bytes());
    v.extend_from_slice(&t.due_ms.to_be_bytes());
    v.extend_from_slice(&t.attempts.to_be_bytes());
    v.extend_from_slice(&(route.len().min(u16::MAX as usize) as u16).to_be_bytes());
    v.extend_from_slice(&route[..route.len().min(u16::MAX as usize)]);
    v.extend_from_slice(&t.payload);
    v
}

/// The timer `name` of bytes written by [`encode`]; `None` when they are
/// not well formed.
pub(crate) fn decode(name: &str, b: &[u8]) -> Option<Timer> {
    let u64_at = |at: usize| b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
    let version = u64_at(0)?;
    let due_ms = u64_at(8)?;
    let attempts = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let route_len = u16::from_be_bytes(b.get(20..22)?.try_into().ok()?) as usize;
    let route = std::str::from_utf8(b.get(22..22 + route_len)?).ok()?;
    let payload = b.get(22 + route_len..)?.to_vec();
    Some(Timer { name: name.to_string(), due_ms, payload, route: Arc::from(route), attempts, version })
}

/// Where a plugin's timer sits in the queue: `(ready_ms, plugin, name)`.
type Slot = (u64, Arc<str>, String);

#[derive(Default)]
struct State {
    /// plugin → name → (timer, when it is ready: due, or a lease's end).
    plugins: HashMap<Arc<str>, HashMap<String, (Timer, u64)>>,
    queue: BTreeSet<Slot>,
    pending: u64,
}

impl State {
    fn remove(&mut self, plugin: &str, name: &str) -> Option<Timer> {
        let timers = self.plugins.get_mut(plugin)?;
        let (timer, ready) = timers.remove(name)?;
        let key: Arc<str> = self.plugins.get_key_value(plugin).map(|(k, _)| k.clone())?;
        self.queue.remove(&(ready, key, name.to_string()));
        if self.plugins.get(plugin).is_some_and(HashMap::is_empty) {
            self.plugins.remove(plugin);
        }
        self.pending -= 1;
        Some(timer)
    }

    fn insert(&mut self, plugin: &str, timer: Timer, ready: u64) {
        let key = match self.plugins.get_key_value(plugin) {
            Some((k, _)) => k.clone(),
            None => Arc::from(plugin),
        };
        self.queue.insert((ready, key.clone(), timer.name.clone()));
        self.plugins.entry(key).or_default().insert(timer.name.clone(), (timer, ready));
        self.pending += 1;
    }

    /// The timer as `due` claimed it, if it was not set again since.
    fn unchanged(&self, due: &Due) -> bool {
        self.plugins
            .get(&*due.plugin)
            .and_then(|t| t.get(&due.timer.name))
            .is_some_and(|(t, _)| t.version == due.timer.version)
    }
}

/// Timers in this process's memory, for the embedded store also on disk.
pub struct LocalTimers {
    state: Mutex<State>,
    file: Option<TimerFile>,
    changed: Notify,
}

impl LocalTimers {
    /// Timers in memory only: gone when the process exits.
    pub fn memory() -> Self {
        LocalTimers { state: Mutex::default(), file: None, changed: Notify::new() }
    }

    /// Timers kept in `<data_dir>/timers.redb` too, with those it holds
    /// pending again (a lease does not outlive the process).
    pub fn embedded(data_dir: &Path) -> anyhow::Result<Self> {
        let (file, loaded) = TimerFile::open(data_dir)?;
        let mut state = State::default();
        for (plugin, timer) in loaded {
            let due = timer.due_ms;
            state.insert(&plugin, timer, due);
        }
        Ok(LocalTimers { state: Mutex::new(state), file: Some(file), changed: Notify::new() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Timers for LocalTimers {
    async fn set_later(&self, plugin: &str, timer: Timer, max_pending: u64) -> StoreResult<Durable> {
        let written = {
            let mut state = self.state();
            let mine = state.plugins.get(plugin);
            let replaces = mine.is_some_and(|t| t.contains_key(&timer.name));
            if !replaces && mine.map_or(0, |t| t.len() as u64) >= max_pending {
                return Err(StoreError::QuotaExceeded);
            }
            state.remove(plugin, &timer.name);
            let due = timer.due_ms;
            // Written in the order of the changes in memory (under the lock).
            let written = self.file.as_ref().map(|f| f.put(plugin, &timer));
            state.insert(plugin, timer, due);
            written
        };
        self.changed.notify_one();
        Ok(match written {
            Some(w) => Box::pin(w),
            None => durable(),
        })
    }

    async fn cancel_later(&self, plugin: &str, name: &str) -> StoreResult<(bool, Durable)> {
        let mut state = self.state();
        let found = state.remove(plugin, name).is_some();
        let written: Durable = match (found, &self.file) {
            (true, Some(f)) => Box::pin(f.delete(plugin, name)),
            _ => durable(),
        };
        Ok((found, written))
    }

    async fn get(&self, plugin: &str, name: &str) -> StoreResult<Option<Timer>> {
        Ok(self.state().plugins.get(plugin).and_then(|t| t.get(name)).map(|(t, _)| t.clone()))
    }

    async fn list(&self, plugin: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Timer>> {
        let state = self.state();
        let Some(timers) = state.plugins.get(plugin) else { return Ok(Vec::new()) };
        let mut list: Vec<&Timer> =
            timers.values().map(|(t, _)| t).filter(|t| after.is_none_or(|a| *t.name > *a)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list.into_iter().take(limit).cloned().collect())
    }

    async fn claim(&self, now_ms: u64, lease_until_ms: u64, max: usize) -> StoreResult<Claim> {
        let mut state = self.state();
        let mut due = Vec::new();
        while due.len() < max {
            let Some(first) = state.queue.first().cloned() else { break };
            if first.0 > now_ms {
                break;
            }
            let (_, plugin, name) = state.queue.pop_first().expect("just looked");
            let entry = state.plugins.get_mut(&plugin).and_then(|t| t.get_mut(&name)).expect("queued timers exist");
            entry.1 = lease_until_ms;
            due.push(Due { plugin: plugin.clone(), timer: entry.0.clone() });
            state.queue.insert((lease_until_ms, plugin, name));
        }
        Ok(Claim { due, next_ms: state.queue.first().map(|s| s.0), pending: state.pending })
    }

    async fn done(&self, due: &Due) -> StoreResult<()> {
        let written = {
            let mut state = self.state();
            if !state.unchanged(due) {
                return Ok(());
            }
            state.remove(&due.plugin, &due.timer.name);
            self.file.as_ref().map(|f| f.delete(&due.plugin, &due.timer.name))
        };
        // A firing's end need not wait for the disk: at worst a crash runs
        // it again (at least once).
        drop(written);
        Ok(())
    }

    async fn retry(&self, due: &Due, at_ms: u64, failed: bool) -> StoreResult<()> {
        let written = {
            let mut state = self.state();
            if !state.unchanged(due) {
                return Ok(());
            }
            let mut timer = state.remove(&due.plugin, &due.timer.name).expect("unchanged, so present");
            timer.due_ms = at_ms;
            timer.attempts += u32::from(failed);
            let written = self.file.as_ref().map(|f| f.put(&due.plugin, &timer));
            state.insert(&due.plugin, timer, at_ms);
            written
        };
        drop(written);
        self.changed.notify_one();
        Ok(())
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }

    fn poll_ms(&self) -> u64 {
        // Every change goes through this process, and notifies.
        1_000
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! One suite for every back end of [`Timers`].

    use super::*;

    pub(crate) fn timer(name: &str, due_ms: u64, payload: &str) -> Timer {
        Timer {
            name: name.to_string(),
            due_ms,
            payload: payload.as_bytes().to_vec(),
            route: Arc::from("/r"),
            attempts: 0,
            version: new_version(),
        }
    }

    /// Sets, replaces, cancels, claims under a lease, and the quota.
    pub(crate) async fn suite(t: &dyn Timers) {
        t.set("p", timer("a", 1_000, "one"), 10).await.unwrap();
        t.set("p", timer("b", 2_000, "two"), 10).await.unwrap();
        t.set("q", timer("a", 1_500, "theirs"), 10).await.unwrap();
        assert_eq!(t.get("p", "a").await.unwrap().unwrap().payload, b"one");
        assert_eq!(t.get("q", "a").await.unwrap().unwrap().payload, b"theirs", "names are per plugin");
        let names = |l: Vec<Timer>| l.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(t.list("p", None, 10).await.unwrap()), ["a", "b"]);
        assert_eq!(names(t.list("p", Some("a"), 10).await.unwrap()), ["b"]);

        // Nothing is due before its time.
        let c = t.claim(999, 60_000, 10).await.unwrap();
        assert!(c.due.is_empty());
        assert_eq!((c.next_ms, c.pending), (Some(1_000), 3));

        // A replace moves it and changes the payload.
        t.set("p", timer("a", 1_200, "one'"), 10).await.unwrap();
        let c = t.claim(1_499, 60_000, 10).await.unwrap();
        assert_eq!(c.due.len(), 1);
        assert_eq!((&*c.due[0].plugin, c.due[0].timer.payload.as_slice()), ("p", b"one'".as_slice()));
        assert_eq!(c.next_ms, Some(1_500));

        // Claimed: leased, so a second claim does not get it.
        let again = t.claim(1_499, 60_000, 10).await.unwrap();
        assert!(again.due.is_empty(), "a leased timer is not claimed twice: {again:?}");
        // ...until its lease ends; in the order they became ready.
        let late = t.claim(60_000, 120_000, 10).await.unwrap();
        let order: Vec<_> = late.due.iter().map(|d| (&*d.plugin, d.timer.name.as_str())).collect();
        assert_eq!(order, [("q", "a"), ("p", "b"), ("p", "a")]);
        let a = late.due[2].clone();

        // A failed firing is due again, counted.
        t.retry(&a, 70_000, true).await.unwrap();
        let got = t.get("p", "a").await.unwrap().unwrap();
        assert_eq!((got.due_ms, got.attempts), (70_000, 1));
        let c = t.claim(70_000, 130_000, 1).await.unwrap();
        assert_eq!((c.due[0].timer.attempts, c.due[0].timer.name.as_str()), (1, "a"));
        t.done(&c.due[0]).await.unwrap();
        assert_eq!(t.get("p", "a").await.unwrap(), None, "a firing's end removes it");

        // A timer set again while it was firing stays.
        let b = late.due[1].clone();
        t.set("p", timer("b", 200_000, "two'"), 10).await.unwrap();
        t.done(&b).await.unwrap();
        t.retry(&b, 1, true).await.unwrap();
        let kept = t.get("p", "b").await.unwrap().unwrap();
        assert_eq!((kept.due_ms, kept.attempts, kept.payload.as_slice()), (200_000, 0, b"two'".as_slice()));

        // Cancel.
        assert!(t.cancel("q", "a").await.unwrap());
        assert!(!t.cancel("q", "a").await.unwrap());
        assert_eq!(t.claim(u64::MAX / 2, u64::MAX / 2, 10).await.unwrap().pending, 1);

        // The quota counts timers added, not replaced.
        t.set("quota", timer("x", 1, ""), 2).await.unwrap();
        t.set("quota", timer("y", 1, ""), 2).await.unwrap();
        assert_eq!(t.set("quota", timer("z", 1, ""), 2).await, Err(StoreError::QuotaExceeded));
        t.set("quota", timer("y", 5, "again"), 2).await.unwrap();
        assert!(t.cancel("quota", "x").await.unwrap());
        t.set("quota", timer("z", 1, ""), 2).await.unwrap();
    }

    #[tokio::test]
    async fn memory_timers_pass_the_suite() {
        suite(&LocalTimers::memory()).await;
    }

    #[tokio::test]
    async fn embedded_timers_pass_the_suite_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let t = LocalTimers::embedded(dir.path()).unwrap();
            suite(&t).await;
            t.set("p", timer("later", 5_000, "kept"), 10).await.unwrap();
            let c = t.claim(5_000, 10_000, 10).await.unwrap();
            assert!(c.due.iter().any(|d| d.timer.name == "later"), "claimed, not finished, before the restart");
        }
        let t = LocalTimers::embedded(dir.path()).unwrap();
        let later = t.get("p", "later").await.unwrap().unwrap();
        assert_eq!((later.due_ms, later.payload.as_slice(), &*later.route), (5_000, b"kept".as_slice(), "/r"));
        let mut names: Vec<_> = t.list("p", None, 10).await.unwrap().into_iter().map(|t| t.name).collect();
        names.sort();
        assert_eq!(names, ["b", "later"]);
        let c = t.claim(5_000, 10_000, 10).await.unwrap();
        assert!(c.due.iter().any(|d| d.timer.name == "later"), "a lease does not outlive the process: {c:?}");
    }

    #[test]
    fn timers_encode_and_decode() {
        let t = Timer { attempts: 3, ..timer("n", 77, "payload") };
        assert_eq!(decode("n", &encode(&t)), Some(t));
        assert_eq!(decode("n", &[1, 2, 3]), None);
    }
}
