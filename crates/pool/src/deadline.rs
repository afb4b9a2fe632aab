//! The watchdog: ends a guest call when its time is up.
//!
//! Every thread that runs guest code has an [`Arm`], registered with one
//! process-wide watchdog thread. Before guest code runs, the thread arms it
//! with the call's deadline and the address of the instance's budget global
//! (`budget.rs`); afterwards it disarms it. The watchdog wakes every
//! millisecond while any arm is armed, and once an armed call is past its
//! deadline it writes [`EXPIRED`] into that global, again on every tick until
//! the call is disarmed (a guest charging a bulk operation at the same moment
//! may overwrite one write, not two). The guest's next check (a loop header, a
//! function entry, a bulk operation) then traps. With no call armed for a
//! while, the watchdog parks and costs nothing.
//!
//! Arming a call reads no clock. A call's own budget is armed as a length
//! ("`n` ms from now"); the watchdog turns it into a time on its first visit,
//! from a clock it reads after seeing the arming, so a watchdog thread that
//! was descheduled for a while can make a call late but never cut it short. A
//! caller's deadline is already a time and is armed as one. A call armed for
//! `n` ms is stopped after at least `n` and at most about `n + 2` ms of wall
//! time (one tick to be seen, one to expire), plus the time to its next check.
//! Each arming carries a generation, so the watchdog can never stamp a later
//! call with a reading taken for an earlier one of the same length.
//!
//! Cost per call: three stores to arm (one of them ordered), a compare-and-swap
//! to disarm; all on the
//! calling thread's own cache line but for the watchdog's rare visits.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::budget::EXPIRED;

/// How often the watchdog looks at the armed calls.
const TICK: Duration = Duration::from_millis(1);
/// Ticks with nothing armed before the watchdog parks.
const IDLE_TICKS_BEFORE_PARKING: u32 = 100;
/// In an arm's state: the watchdog is writing to the target right now.
const FIRING: u64 = 1 << 63;
/// In an arm's state: the value is a budget in ms, not yet a watchdog time.
const RELATIVE: u64 = 1 << 62;
/// Where an arm's state keeps its generation (bumped by every arming).
const GENERATION_SHIFT: u32 = 42;
const GENERATION: u64 = ((1 << 20) - 1) << GENERATION_SHIFT;
/// An arm state's value: a watchdog millisecond, or a budget if [`RELATIVE`].
const VALUE: u64 = (1 << GENERATION_SHIFT) - 1;

struct Watchdog {
    start: Instant,
    /// Milliseconds from `start`, as of the watchdog's last tick (or a
    /// waker's reading of the clock).
    now_ms: AtomicU64,
    /// The watchdog is parked (or about to): `now_ms` may be stale.
    parked: AtomicBool,
    arms: Mutex<Vec<Arc<Arm>>>,
    thread: OnceLock<Thread>,
}

/// One thread's registration with the watchdog.
pub(crate) struct Arm {
    /// The arming's generation, and a value: 0 when idle; otherwise the
    /// watchdog millisecond at which the armed call is out of time, or (with
    /// [`RELATIVE`]) its budget until the watchdog has seen it. [`FIRING`] is
    /// set while the watchdog writes.
    state: AtomicU64,
    /// The caller's deadline in watchdog milliseconds (`u64::MAX`: none),
    /// which a relative budget's time may not pass.
    deadline: AtomicU64,
    /// The budget global of the instance whose call is armed.
    target: AtomicPtr<i64>,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            start: Instant::now(),
            now_ms: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            arms: Mutex::new(Vec::new()),
            thread: OnceLock::new(),
        }));
        let thread = std::thread::Builder::new()
            .name("rustmq-etl-watchdog".to_owned())
            .spawn(move || watchdog.run())
            .expect("cannot start the rustmq-etl watchdog thread");
        let _ = watchdog.thread.set(thread.thread().clone());
        watchdog
    })
}

impl Watchdog {
    fn clock_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&self) {
        let mut idle_ticks = 0;
        loop {
            let now = self.clock_ms();
            self.now_ms.store(now, Ordering::SeqCst);
            if self.visit(now) {
                idle_ticks = 0;
            } else {
                idle_ticks += 1;
            }
            if idle_ticks < IDLE_TICKS_BEFORE_PARKING {
                std::thread::sleep(TICK);
                continue;
            }
            // Park, unless a call was armed meanwhile: an arming thread either
            // is seen here, or sees `parked` and wakes this thread.
            self.parked.store(true, Ordering::SeqCst);
            if !self.visit(self.clock_ms()) {
                std::thread::park();
            }
            self.wake();
            idle_ticks = 0;
        }
    }

    /// Stops the armed calls that are out of time; returns whether any call
    /// is armed.
    fn visit(&self, now: u64) -> bool {
        let mut arms = self.arms.lock().unwrap_or_else(|p| p.into_inner());
        // An arm only the watchdog still holds belongs to a thread that ended.
        arms.retain(|arm| Arc::strong_count(arm) > 1);
        let mut armed = false;
        for arm in arms.iter() {
            let mut state = arm.state.load(Ordering::SeqCst);
            if state & (VALUE | RELATIVE) == 0 {
                continue;
            }
            armed = true;
            if state & FIRING != 0 {
                continue;
            }
            if state & RELATIVE != 0 {
                // The budget starts no earlier than this reading of the clock,
                // taken after the arming was seen: rounded up by one.
                let at = (self.clock_ms() + (state & VALUE) + 1)
                    .min(arm.deadline.load(Ordering::SeqCst));
                let stamped = (state & GENERATION) | at;
                // Fails only if that call has ended meanwhile.
                if arm
                    .state
                    .compare_exchange(state, stamped, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    continue;
                }
                state = stamped;
            }
            if now < state & VALUE {
                continue;
            }
            if arm
                .state
                .compare_exchange(state, state | FIRING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let target = arm.target.load(Ordering::SeqCst);
                // SAFETY: the arming thread stored `target` before the state,
                // and `Arm::disarm` does not return (so the instance holding
                // the global is not dropped) while `FIRING` is set. The global
                // is 16-byte aligned (`VMGlobalDefinition`), so it can be
                // written atomically while the guest reads it.
                unsafe { AtomicI64::from_ptr(target) }.store(EXPIRED, Ordering::SeqCst);
                arm.state.store(state, Ordering::SeqCst);
            }
        }
        armed
    }

    /// Brings `now_ms` up to date and un-parks the watchdog.
    fn wake(&self) {
        self.now_ms.store(self.clock_ms(), Ordering::SeqCst);
        self.parked.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// A thread's arm, and the last deadline it converted to the watchdog's
/// milliseconds (a message's calls share their pipeline's deadline).
struct ThisThread {
    arm: Arc<Arm>,
    converted: Cell<Option<(Instant, u64)>>,
}

thread_local! {
    static ARM: ThisThread = {
        let arm = Arc::new(Arm {
            state: AtomicU64::new(0),
            deadline: AtomicU64::new(u64::MAX),
            target: AtomicPtr::new(std::ptr::null_mut()),
        });
        watchdog()
            .arms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(arm.clone());
        ThisThread {
            arm,
            converted: Cell::new(None),
        }
    };
}

/// Which deadline a call was armed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Armed {
    /// Its own budget: `budget_ms` from now.
    Budget,
    /// The caller's deadline, which came first.
    Deadline,
}

/// Runs `f` with this thread's arm armed: once `budget_ms` milliseconds have
/// passed, or `deadline` has if it comes first, the watchdog writes
/// [`EXPIRED`] to `*target` until `f` returns. Says which of the two it armed.
///
/// # Safety
///
/// `target` must point to an `i64` that stays valid, and that nothing but
/// guest code and the watchdog accesses, until this function returns (the
/// budget global of an instance that outlives the call).
pub(crate) unsafe fn run_armed<R>(
    target: *mut i64,
    budget_ms: u64,
    deadline: Option<Instant>,
    f: impl FnOnce() -> R,
) -> (R, Armed) {
    ARM.with(|this| {
        let arm = &*this.arm;
        let watchdog = watchdog();
        if watchdog.parked.load(Ordering::SeqCst) {
            watchdog.wake();
        }
        // Where the budget would end by the watchdog's last reading: only to
        // tell which of the two comes first (the watchdog stamps the budget's
        // real end, and keeps it no later than the caller's deadline).
        let own = watchdog
            .now_ms
            .load(Ordering::SeqCst)
            .saturating_add(budget_ms.max(1))
            .saturating_add(1);
        // A deadline in the watchdog's milliseconds, rounded up: the call is
        // never stopped before it.
        let theirs = deadline.map(|at| match this.converted.get() {
            Some((seen, ms)) if seen == at => ms,
            _ => {
                let since = at.saturating_duration_since(watchdog.start);
                // (Saturating: a deadline past `u64::MAX` ms is none.)
                let ms = u64::try_from(since.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_add(u64::from(since.subsec_nanos() % 1_000_000 != 0));
                this.converted.set(Some((at, ms)));
                ms
            }
        });
        let generation = (arm.state.load(Ordering::Relaxed) + (1 << GENERATION_SHIFT)) & GENERATION;
        let (value, armed) = match theirs {
            Some(theirs) if theirs < own => (theirs.clamp(1, VALUE), Armed::Deadline),
            _ => (RELATIVE | budget_ms.clamp(1, VALUE >> 1), Armed::Budget),
        };
        arm.target.store(target, Ordering::Relaxed);
        // Like `target`: published by the state's store below, which the
        // watchdog reads first.
        arm.deadline
            .store(theirs.unwrap_or(u64::MAX), Ordering::Relaxed);
        arm.state.store(generation | value, Ordering::SeqCst);
        if watchdog.parked.load(Ordering::SeqCst) {
            watchdog.wake();
        }
        // Disarms on the way out, a panic included.
        let _armed = Disarm(arm);
        (f(), armed)
    })
}

struct Disarm<'a>(&'a Arm);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        let state = &self.0.state;
        loop {
            let current = state.load(Ordering::SeqCst);
            if current & FIRING == 0
                && state
                    .compare_exchange(
                        current,
                        current & GENERATION,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
            {
                return;
            }
            // The watchdog is writing to the target: a few instructions.
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that outlives its budget sees the expired value, soon after the
    /// budget and not before it.
    #[test]
    fn the_watchdog_writes_the_target_once_the_time_is_up() {
        let target = AtomicI64::new(1);
        let started = Instant::now();
        let (seen, armed) = unsafe {
            run_armed(target.as_ptr(), 20, None, || {
                while target.load(Ordering::SeqCst) >= 0 {
                    std::hint::spin_loop();
                }
                started.elapsed()
            })
        };
        assert!(seen >= Duration::from_millis(20), "{seen:?}");
        assert_eq!(armed, Armed::Budget);
        assert_eq!(target.load(Ordering::SeqCst), EXPIRED);
    }

    /// A watchdog that fell behind (here: held up on its lock for 30 ms, as a
    /// descheduled thread would be) makes a call late, never short: the
    /// budget starts when the watchdog sees the call.
    #[test]
    fn a_late_watchdog_does_not_cut_a_call_short() {
        unsafe { run_armed(AtomicI64::new(0).as_ptr(), 1, None, || ()) };
        let held = watchdog().arms.lock().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let target = AtomicI64::new(1);
        let started = Instant::now();
        let (seen, _) = unsafe {
            run_armed(target.as_ptr(), 20, None, || {
                drop(held);
                while target.load(Ordering::SeqCst) >= 0 {
                    std::hint::spin_loop();
                }
                started.elapsed()
            })
        };
        assert!(seen >= Duration::from_millis(20), "stopped after {seen:?}");
    }

    /// A caller's deadline before the budget's end is the one armed, and the
    /// call is not stopped before it.
    #[test]
    fn an_earlier_deadline_is_armed_instead_of_the_budget() {
        let target = AtomicI64::new(1);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(15);
        let (seen, armed) = unsafe {
            run_armed(target.as_ptr(), 10_000, Some(deadline), || {
                while target.load(Ordering::SeqCst) >= 0 {
                    std::hint::spin_loop();
                }
                Instant::now()
            })
        };
        assert!(seen >= deadline, "stopped {:?} early", deadline - seen);
        assert_eq!(armed, Armed::Deadline);
        let (_, armed) = unsafe {
            run_armed(
                AtomicI64::new(0).as_ptr(),
                5,
                Some(deadline + Duration::from_secs(60)),
                || (),
            )
        };
        assert_eq!(armed, Armed::Budget, "a later deadline is not armed");
        // Nor one past `u64::MAX` ms (it was cut to the milliseconds that
        // fit: here, one as soon as the deadline above).
        let far = deadline + Duration::from_millis(u64::MAX) + Duration::from_millis(2);
        let (_, armed) = unsafe { run_armed(AtomicI64::new(0).as_ptr(), 10_000, Some(far), || ()) };
        assert_eq!(
            armed,
            Armed::Budget,
            "a deadline past u64::MAX ms is not armed"
        );
    }

    /// A call that ends in time is never written to, even long after.
    #[test]
    fn a_call_that_ends_in_time_is_left_alone() {
        let target = AtomicI64::new(5);
        unsafe { run_armed(target.as_ptr(), 5, None, || ()) };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(target.load(Ordering::SeqCst), 5);
    }

    /// After parking, the watchdog wakes for the next armed call and still
    /// gives it its whole budget.
    #[test]
    fn a_parked_watchdog_wakes_for_a_new_call() {
        // Make sure the watchdog exists, then let it park.
        unsafe { run_armed(AtomicI64::new(0).as_ptr(), 1, None, || ()) };
        std::thread::sleep(TICK * (IDLE_TICKS_BEFORE_PARKING + 50));
        let target = AtomicI64::new(1);
        let started = Instant::now();
        let (seen, _) = unsafe {
            run_armed(target.as_ptr(), 10, None, || {
                while target.load(Ordering::SeqCst) >= 0 {
                    std::hint::spin_loop();
                }
                started.elapsed()
            })
        };
        assert!(seen >= Duration::from_millis(10), "{seen:?}");
    }
}
