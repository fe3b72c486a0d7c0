//! The plugins as the timer scheduler's target: a due timer runs the
//! `on-timer` of the version of its plugin serving now (so a hot reload
//! keeps pending timers, and the new version runs them), and its effects
//! are applied like an event's.

use std::sync::Weak;

use async_trait::async_trait;

use super::App;
use crate::config::Limits;
use crate::handler::{EventContext, Fired, TimerTarget};
use crate::runtime::CallContext;
use crate::scheduler::SchedulerOptions;
use crate::store::Timer;

/// Firings one host runs at once.
const MAX_IN_FLIGHT: usize = 64;

/// The scheduler's settings for these limits. A lease outlasts any
/// firing that keeps to the event timeout, with a margin, so another host
/// takes a timer over only from a host that stopped.
pub(super) fn scheduler_options(limits: &Limits) -> SchedulerOptions {
    SchedulerOptions {
        retries: limits.timer_retries,
        retry_ms: limits.timer_retry_ms,
        lease_ms: 5_000 + 2 * limits.event_timeout_ms,
        max_in_flight: MAX_IN_FLIGHT,
    }
}

/// The app, held weakly (it holds the scheduler).
pub(super) struct AppTimers(pub Weak<App>);

#[async_trait]
impl TimerTarget for AppTimers {
    async fn fire(&self, plugin: &str, timer: &Timer) -> Fired {
        let Some(app) = self.0.upgrade() else { return Fired::NoPlugin };
        let Some(slot) = app.slot(plugin) else { return Fired::NoPlugin };
        let version = slot.current();
        let event = EventContext::detached(timer.route.clone());
        let cx = CallContext { event: &event, fresh: false };
        match version.plugin.on_timer(cx, &timer.name, &timer.payload).await {
            Ok(((), effects)) => {
                app.hub.apply(effects);
                Fired::Ran
            }
            Err(why) => Fired::Failed(why),
        }
    }

    fn firing_rate(&self, plugin: &str) -> Option<u32> {
        let app = self.0.upgrade()?;
        let config = app.config.lock().unwrap_or_else(|p| p.into_inner());
        let limits = &config.plugins.get(plugin)?.limits;
        Some(config.limits.for_plugin(limits).timer_firings_per_second)
    }
}
