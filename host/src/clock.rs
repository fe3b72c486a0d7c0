//! The time timers are due by: the system's clock, or, for the conformance
//! kit, a clock that moves only when a scenario advances it, so that a
//! scenario fires a timer without waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Unix milliseconds, from the system or a hand-moved clock.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that moves only by [`Clock::advance`].
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A hand-moved clock starting at `start_ms`.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => crate::store::now_ms(),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Whether this clock moves only by hand.
    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// Moves a manual clock forward to `ms` (never back; the system clock
    /// cannot be moved: a no-op).
    pub fn move_to(&self, ms: u64) {
        if let Clock::Manual(now) = self {
            now.fetch_max(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.move_to(1_250);
        assert_eq!(clock.clone().now_ms(), 1_250, "clones share the time");
        clock.move_to(900);
        assert_eq!(clock.now_ms(), 1_250, "never back");
        assert!(clock.is_manual() && !Clock::System.is_manual());
        assert!(Clock::System.now_ms() > 1_600_000_000_000);
    }
}
