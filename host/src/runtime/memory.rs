//! Linear memory of the live instances, bounded per instance and in total.
//!
//! Each Store's limiter takes the bytes a memory grows by from the host-wide
//! [`MemoryBudget`] and gives them back when the Store is dropped, so the
//! instances of every plugin together never hold more than the budget
//! (`limits.instance_memory_mib`), whatever each plugin's own cap allows. A
//! grow the budget cannot cover fails inside the guest, as a grow past the
//! instance's cap does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::ResourceLimiter;

/// Bytes of linear memory all live instances may hold together.
pub struct MemoryBudget {
    used: AtomicUsize,
    max: usize,
    gauge: prometheus::IntGauge,
}

impl MemoryBudget {
    /// A budget of `max` bytes, reported in `gauge`.
    pub fn new(max: usize, gauge: prometheus::IntGauge) -> Self {
        MemoryBudget { used: AtomicUsize::new(0), max, gauge }
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok();
        if fits {
            self.gauge.add(bytes as i64);
        }
        fits
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.sub(bytes as i64);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// The limiter of one Store: the instance's own caps, and its share of the
/// budget.
pub(crate) struct Limiter {
    memory_bytes: usize,
    budget: Arc<MemoryBudget>,
    /// Bytes this Store took from the budget.
    held: usize,
    /// What it held once instantiated.
    baseline: usize,
}

impl Limiter {
    pub fn new(memory_bytes: usize, budget: Arc<MemoryBudget>) -> Self {
        Limiter { memory_bytes, budget, held: 0, baseline: 0 }
    }

    /// Marks what the instance holds now as its starting size.
    pub fn settle(&mut self) {
        self.baseline = self.held;
    }

    /// How far its memory grew since [`Limiter::settle`].
    pub fn grown(&self) -> usize {
        self.held.saturating_sub(self.baseline)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if !self.budget.take(more) {
            tracing::debug!(
                more,
                used = self.budget.used(),
                "a memory grow was refused: the host's instance memory budget is spent"
            );
            return Ok(false);
        }
        self.held += more;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    /// Core instances per component instance: a Rust handler has 3 to 5, a
    /// componentize-py one 11 (CPython and its libraries are linked
    /// dynamically, one core instance each).
    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        2
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(max, prometheus::IntGauge::new("g", "g").unwrap()))
    }

    #[test]
    fn instances_share_the_budget_and_give_it_back() {
        let b = budget(100);
        let mut one = Limiter::new(80, b.clone());
        let mut two = Limiter::new(80, b.clone());
        assert!(one.memory_growing(0, 60, None).unwrap());
        assert!(!one.memory_growing(60, 90, None).unwrap(), "over its own cap");
        assert!(!two.memory_growing(0, 50, None).unwrap(), "over what the budget has left");
        assert!(two.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.used(), 100);
        drop(one);
        assert_eq!(b.used(), 40, "a dropped instance gives its memory back");
        assert!(two.memory_growing(40, 80, None).unwrap());
        assert_eq!(b.gauge.get(), 80);
    }

    #[test]
    fn growth_is_measured_from_the_settled_size() {
        let mut l = Limiter::new(100, budget(100));
        assert!(l.memory_growing(0, 10, None).unwrap());
        l.settle();
        assert_eq!(l.grown(), 0);
        assert!(l.memory_growing(10, 30, None).unwrap());
        assert_eq!(l.grown(), 20);
    }
}
