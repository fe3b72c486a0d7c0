//! The timer scheduler: one task per host that claims the timers due now
//! from the store (under a lease, so on several hosts exactly one runs
//! each firing), fires each through the [`TimerTarget`] (the plugin's
//! `on-timer`), and then ends it: removed when it ran, due again later
//! with a doubling delay when it failed, dropped and counted when its last
//! retry failed. Firings per plugin are held to a rate per second; a timer
//! past it waits for the next second.
//!
//! With a manual [`Clock`] (the conformance kit) nothing runs by itself:
//! [`Scheduler::advance`] moves the clock from one due time to the next,
//! firing each timer at its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::handler::{Fired, TimerTarget};
use crate::metrics::Metrics;
use crate::store::Timers;
use crate::store::timers::Due;

/// Most timers one claim takes.
const CLAIM_BATCH: usize = 256;
/// Most firings one [`Scheduler::advance`] runs (a timer that sets itself
/// due at once would otherwise run forever).
const MAX_ADVANCE_FIRINGS: usize = 100_000;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Runs again after a failed firing before the timer is dropped.
    pub retries: u32,
    /// The first retry's delay; it doubles with each one.
    pub retry_ms: u64,
    /// How long a claimed timer is this host's: another host claims it
    /// again after that if it was not ended (this host died).
    pub lease_ms: u64,
    /// Firings running at once on this host.
    pub max_in_flight: usize,
}

/// Claims due timers and fires them.
pub struct Scheduler {
    timers: Arc<dyn Timers>,
    target: Arc<dyn TimerTarget>,
    clock: Clock,
    opts: SchedulerOptions,
    metrics: Arc<Metrics>,
    /// Per plugin: the second (Unix) its count is of, and firings in it.
    rates: Mutex<HashMap<Arc<str>, (u64, u32)>>,
    in_flight: Arc<Semaphore>,
}

impl Scheduler {
    /// A scheduler of the store's `timers`, firing through `target`.
    pub fn new(
        timers: Arc<dyn Timers>,
        target: Arc<dyn TimerTarget>,
        clock: Clock,
        opts: SchedulerOptions,
        metrics: Arc<Metrics>,
    ) -> Arc<Scheduler> {
        let in_flight = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
        Arc::new(Scheduler { timers, target, clock, opts, metrics, rates: Mutex::default(), in_flight })
    }

    /// The clock timers are due by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Runs until `shutdown`: claims what is due, fires it, and sleeps until
    /// the next timer is due, a timer is set, or the store's poll interval
    /// passed.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let next = me.claim_and_fire().await;
                let now = me.clock.now_ms();
                let wait = Duration::from_millis(next.saturating_sub(now));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.timers.changed().notified() => {}
                }
            }
        })
    }

    /// One round: claims as many due timers as there are free firing
    /// places and starts them; when to look again (Unix ms).
    async fn claim_and_fire(self: &Arc<Self>) -> u64 {
        let now = self.clock.now_ms();
        let poll = now + self.timers.poll_ms();
        let free = self.in_flight.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            // Every place is taken: look again shortly.
            return now + 5;
        }
        let claim = match self.timers.claim(now, now + self.opts.lease_ms, free).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due timers failed; trying again in a second");
                return now + 1_000;
            }
        };
        self.metrics.timers_pending.set(claim.pending as i64);
        let full = claim.due.len() == free;
        for due in claim.due {
            let Ok(place) = self.in_flight.clone().try_acquire_owned() else { break };
            let me = self.clone();
            tokio::spawn(async move {
                me.fire(due).await;
                drop(place);
            });
        }
        if full { now } else { claim.next_ms.unwrap_or(u64::MAX).min(poll) }
    }

    /// Whether `plugin` may fire once more in the second of `now_ms`
    /// (`None`: this host does not serve it).
    fn admit(&self, plugin: &Arc<str>, now_ms: u64) -> Option<bool> {
        let rate = self.target.firing_rate(plugin)?;
        let second = now_ms / 1000;
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let (at, count) = rates.entry(plugin.clone()).or_insert((second, 0));
        if *at != second {
            (*at, *count) = (second, 0);
        }
        if *count >= rate {
            return Some(false);
        }
        *count += 1;
        Some(true)
    }

    /// Fires one claimed timer and ends it.
    async fn fire(&self, due: Due) {
        let now = self.clock.now_ms();
        let due = &due;
        let later = |ms: u64| async move {
            if let Err(e) = self.timers.retry(due, now.saturating_add(ms), false).await {
                tracing::warn!(plugin = %due.plugin, timer = %due.timer.name, error = %e, "a timer could not be put off; it runs when its lease ends");
            }
        };
        match self.admit(&due.plugin, now) {
            // A plugin this host does not serve (yet: a host with another
            // config, or one reloading): another host, or this one later.
            None => return later(1_000).await,
            Some(false) => return later(1_000 - now % 1_000).await,
            Some(true) => {}
        }
        let late = now.saturating_sub(due.timer.due_ms);
        self.metrics.timer_lateness_seconds.observe(late as f64 / 1000.0);
        let ended = match self.target.fire(&due.plugin, &due.timer).await {
            Fired::Ran => {
                self.metrics.timers_fired.with_label_values(&[&*due.plugin]).inc();
                self.timers.done(due).await
            }
            Fired::NoPlugin => return later(1_000).await,
            Fired::Failed(why) if due.timer.attempts >= self.opts.retries => {
                self.metrics.timers_dropped.with_label_values(&[&*due.plugin]).inc();
                tracing::warn!(plugin = %due.plugin, timer = %due.timer.name, attempts = due.timer.attempts + 1, reason = %why, "a timer's on-timer failed for the last time; the timer is dropped");
                self.timers.done(due).await
            }
            Fired::Failed(why) => {
                self.metrics.timers_retried.with_label_values(&[&*due.plugin]).inc();
                let delay = self.opts.retry_ms.saturating_mul(1 << due.timer.attempts.min(30));
                tracing::warn!(plugin = %due.plugin, timer = %due.timer.name, attempts = due.timer.attempts + 1, retry_in_ms = delay, reason = %why, "a timer's on-timer failed; it runs again later");
                self.timers.retry(due, self.clock.now_ms().saturating_add(delay), true).await
            }
        };
        if let Err(e) = ended {
            tracing::warn!(plugin = %due.plugin, timer = %due.timer.name, error = %e, "a timer's firing could not be ended; it runs again when its lease ends");
        }
    }

    /// Moves a manual clock `ms` forward, one due time after another,
    /// firing every timer due on the way at its time (in due order, one at
    /// a time, each ended before the next). The number of firings.
    pub async fn advance(&self, ms: u64) -> anyhow::Result<usize> {
        anyhow::ensure!(self.clock.is_manual(), "only a manual clock can be advanced");
        let until = self.clock.now_ms().saturating_add(ms);
        let mut fired = 0;
        loop {
            let at = self.clock.now_ms();
            let claim = self.timers.claim(at, at + self.opts.lease_ms, CLAIM_BATCH).await?;
            self.metrics.timers_pending.set(claim.pending as i64);
            if claim.due.is_empty() {
                match claim.next_ms {
                    Some(next) if next <= until => self.clock.move_to(next),
                    _ if at >= until => return Ok(fired),
                    _ => self.clock.move_to(until),
                }
                continue;
            }
            for due in claim.due {
                fired += 1;
                if fired > MAX_ADVANCE_FIRINGS {
                    anyhow::bail!(
                        "more than {MAX_ADVANCE_FIRINGS} timer firings in one advance: a timer sets itself due at once?"
                    );
                }
                self.fire(due).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The scheduler with an in-memory store and a target that records
    //! (and can fail) firings: on time, retried then dropped, held to the
    //! rate, and the manual clock.

    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::handler::HandlerFailure;
    use crate::store::timers::tests::timer;
    use crate::store::{LocalTimers, Timer};

    #[derive(Default)]
    struct Recorder {
        fired: Mutex<Vec<(String, String, u64)>>,
        fail: AtomicU32,
        rate: u32,
        clock: Mutex<Option<Clock>>,
    }

    #[async_trait]
    impl TimerTarget for Recorder {
        async fn fire(&self, plugin: &str, t: &Timer) -> Fired {
            let now = self.clock.lock().unwrap().as_ref().map_or(0, Clock::now_ms);
            self.fired.lock().unwrap().push((plugin.to_string(), t.name.clone(), now));
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Fired::Failed(HandlerFailure::Trap("test trap".into()));
            }
            Fired::Ran
        }

        fn firing_rate(&self, plugin: &str) -> Option<u32> {
            (plugin != "gone").then_some(self.rate)
        }
    }

    fn scheduler(clock: Clock, rate: u32) -> (Arc<Scheduler>, Arc<Recorder>, Arc<LocalTimers>, Arc<Metrics>) {
        let timers = Arc::new(LocalTimers::memory());
        let target = Arc::new(Recorder { rate, clock: Mutex::new(Some(clock.clone())), ..Recorder::default() });
        let metrics = Arc::new(Metrics::new());
        let opts = SchedulerOptions { retries: 2, retry_ms: 100, lease_ms: 5_000, max_in_flight: 64 };
        (Scheduler::new(timers.clone(), target.clone(), clock, opts, metrics.clone()), target, timers, metrics)
    }

    #[tokio::test]
    async fn advance_fires_each_timer_at_its_time_in_order() {
        let clock = Clock::manual(10_000);
        let (s, target, timers, _) = scheduler(clock.clone(), 100);
        timers.set("p", timer("b", 12_000, ""), 10).await.unwrap();
        timers.set("p", timer("a", 11_000, ""), 10).await.unwrap();
        timers.set("p", timer("c", 30_000, ""), 10).await.unwrap();
        assert_eq!(s.advance(999).await.unwrap(), 0, "nothing is due before its time");
        assert_eq!(s.advance(5_000).await.unwrap(), 2);
        assert_eq!(clock.now_ms(), 15_999);
        let fired = target.fired.lock().unwrap().clone();
        assert_eq!(fired, [("p".into(), "a".into(), 11_000), ("p".into(), "b".into(), 12_000)]);
        assert_eq!(timers.get("p", "a").await.unwrap(), None, "a timer that ran is gone");
        assert!(timers.get("p", "c").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_failing_timer_is_retried_with_a_doubling_delay_then_dropped_and_counted() {
        let clock = Clock::manual(0);
        let (s, target, timers, metrics) = scheduler(clock.clone(), 100);
        target.fail.store(10, Ordering::SeqCst);
        timers.set("p", timer("t", 1_000, ""), 10).await.unwrap();
        s.advance(10_000).await.unwrap();
        let times: Vec<u64> = target.fired.lock().unwrap().iter().map(|f| f.2).collect();
        // First run, then retries 100 ms and 200 ms later; then dropped.
        assert_eq!(times, [1_000, 1_100, 1_300]);
        assert_eq!(timers.get("p", "t").await.unwrap(), None);
        assert_eq!(metrics.timers_retried.with_label_values(&["p"]).get(), 2);
        assert_eq!(metrics.timers_dropped.with_label_values(&["p"]).get(), 1);
        assert_eq!(metrics.timers_fired.with_label_values(&["p"]).get(), 0);
    }

    #[tokio::test]
    async fn firings_past_the_rate_wait_for_the_next_second() {
        let clock = Clock::manual(100_000);
        let (s, target, timers, _) = scheduler(clock.clone(), 3);
        for i in 0..5 {
            timers.set("p", timer(&format!("t{i}"), 100_000, ""), 10).await.unwrap();
        }
        timers.set("gone", timer("x", 100_000, ""), 10).await.unwrap();
        s.advance(1_500).await.unwrap();
        let times: Vec<u64> = target.fired.lock().unwrap().iter().filter(|f| f.0 == "p").map(|f| f.2).collect();
        assert_eq!(times, [100_000, 100_000, 100_000, 101_000, 101_000]);
        let kept = timers.get("gone", "x").await.unwrap().expect("a timer of a plugin this host lacks is kept");
        // Put off a second each time it came due, never counted as failed.
        assert_eq!((kept.attempts, kept.due_ms), (0, 102_000));
    }

    #[tokio::test]
    async fn the_running_scheduler_fires_on_time_and_wakes_for_a_new_timer() {
        let (s, target, timers, metrics) = scheduler(Clock::System, 1_000);
        let stop = CancellationToken::new();
        let task = s.start(stop.clone());
        let now = crate::store::now_ms();
        timers.set("p", timer("soon", now + 150, ""), 10).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while target.fired.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fired = target.fired.lock().unwrap().clone();
        assert_eq!(fired.len(), 1, "fired once: {fired:?}");
        assert!(fired[0].2 >= now + 150, "never before its time: {} < {}", fired[0].2, now + 150);
        assert_eq!(metrics.timer_lateness_seconds.get_sample_count(), 1);
        stop.cancel();
        task.await.unwrap();
    }
}
