//! Whether each consumer is moving: a consumer whose every processing slot is busy and
//! none of them finishing (a receiver that hangs, an ack that never completes) takes no
//! work, and `/readyz` must say so rather than answer 200 over a stopped route.
//!
//! Two atomics per delivery, held by the consumer's handler (no lookup per message); the
//! admin listener reads them by route name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static CONSUMERS: LazyLock<Mutex<HashMap<String, Arc<Progress>>>> = LazyLock::new(Default::default);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

#[derive(Debug)]
pub struct Progress {
    slots: usize,
    busy: AtomicUsize,
    /// When a delivery last finished, or the slots last all became busy (ms since EPOCH).
    moved_ms: AtomicU64,
}

/// One delivery in progress; its slot is free again when this drops, whatever ended it.
pub struct Busy(Arc<Progress>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.moved_ms.store(now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn begin(self: &Arc<Self>) -> Busy {
        if self.busy.fetch_add(1, Ordering::Relaxed) + 1 >= self.slots {
            // Full from now on: the stall is timed from here, not from a finish long ago.
            self.moved_ms.store(now_ms(), Ordering::Relaxed);
        }
        Busy(self.clone())
    }

    /// Why the consumer is stalled, when every slot has been busy for longer than `after`
    /// with nothing finishing.
    pub fn stalled(&self, after: Duration) -> Option<String> {
        let busy = self.busy.load(Ordering::Relaxed);
        let still = Duration::from_millis(now_ms().saturating_sub(self.moved_ms.load(Ordering::Relaxed)));
        (busy >= self.slots && still > after).then(|| {
            format!(
                "all {busy} processing slots busy and no message finished for {} ms (stall_after_ms {})",
                still.as_millis(),
                after.as_millis()
            )
        })
    }
}

/// The progress of the consumer of `route`, which has `slots` deliveries at once; replaces
/// that of a consumer it takes over from.
pub fn register(route: &str, slots: usize) -> Arc<Progress> {
    let p = Arc::new(Progress { slots: slots.max(1), busy: AtomicUsize::new(0), moved_ms: AtomicU64::new(now_ms()) });
    CONSUMERS.lock().expect("progress lock").insert(route.to_string(), p.clone());
    p
}

/// Forgets the consumer of `route`, unless another has registered since.
pub fn unregister(route: &str, progress: &Arc<Progress>) {
    let mut all = CONSUMERS.lock().expect("progress lock");
    if all.get(route).is_some_and(|p| Arc::ptr_eq(p, progress)) {
        all.remove(route);
    }
}

/// Why the consumer of `route` is stalled, if it is.
pub fn stalled(route: &str, after: Duration) -> Option<String> {
    CONSUMERS.lock().expect("progress lock").get(route).and_then(|p| p.stalled(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_while_every_slot_is_busy_and_nothing_finishes() {
        let p = register("progress-test", 2);
        let zero = Duration::ZERO;
        let a = p.begin();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.stalled(zero), None, "a free slot: not stalled");
        let b = p.begin();
        std::thread::sleep(Duration::from_millis(5));
        assert!(p.stalled(zero).unwrap().contains("all 2 processing slots busy"));
        assert_eq!(p.stalled(Duration::from_secs(60)), None, "not for long enough");
        drop(a);
        assert_eq!(p.stalled(zero), None);
        drop(b);
        assert!(stalled("progress-test", zero).is_none());
        unregister("progress-test", &p);
    }
}
