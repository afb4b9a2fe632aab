//! A circuit breaker per module occurrence (execution.md, "Circuit breaker").
//!
//! Closed, it counts consecutive failed calls; at `failures` it opens. Open,
//! calls fail at once with `circuit_open` until the cool-down has passed;
//! then exactly one call is let through as a probe (half-open): its success
//! closes the breaker, its failure opens it again for another cool-down.
//! Shared by every engine thread: a few atomics, no lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::options::BreakerSettings;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A breaker's state, as metrics show it (`rustmq_etl_circuit_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe call is in flight or allowed.
    HalfOpen,
}

impl CircuitState {
    /// Its name: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The gauge's value.
    pub fn as_number(self) -> u8 {
        match self {
            CircuitState::Closed => CLOSED,
            CircuitState::Open => OPEN,
            CircuitState::HalfOpen => HALF_OPEN,
        }
    }
}

/// What a breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Go ahead.
    Call,
    /// Go ahead as the probe; report how it went with `probe = true`.
    Probe,
    /// Fail with `circuit_open`; the breaker stays open this long yet.
    Refuse { reopens_in_ms: u64 },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// When it opened, in nanoseconds since `epoch` (not whole
    /// milliseconds: a cool-down never ends early by a rounding).
    opened_at: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long it has been open at `now`.
    fn open_for(&self, now: Instant) -> Duration {
        Duration::from_nanos(
            self.now_ns(now)
                .saturating_sub(self.opened_at.load(Ordering::Acquire)),
        )
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            OPEN => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Its state as a reader sees it at `now`: an open breaker whose
    /// cool-down is over reads half-open, since its next call is the probe
    /// (it becomes so in fact as that call asks).
    pub(crate) fn state_at(&self, now: Instant) -> CircuitState {
        match self.state() {
            CircuitState::Open => {
                if self.open_for(now) >= self.settings.cool_down {
                    CircuitState::HalfOpen
                } else {
                    CircuitState::Open
                }
            }
            state => state,
        }
    }

    /// May a call go ahead now?
    #[inline]
    pub(crate) fn permit(&self, now: Instant) -> Permit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Permit::Call,
            _ => {
                let open_for = self.open_for(now);
                if open_for >= self.settings.cool_down
                    && self
                        .probing
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.state.store(HALF_OPEN, Ordering::Release);
                    Permit::Probe
                } else {
                    Permit::Refuse {
                        reopens_in_ms: ceil_millis(
                            self.settings.cool_down.saturating_sub(open_for),
                        ),
                    }
                }
            }
        }
    }

    /// A probe it let through did not happen after all (the engine could
    /// not start the call): the next call may probe at once.
    pub(crate) fn cancel_probe(&self) {
        self.state.store(OPEN, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// How a call it let through went. Only a call let through while the
    /// breaker was closed counts towards opening it, and once it is open only
    /// its probe decides: a call that began before it opened and ends after
    /// neither closes it (execution.md: only the probe's success does) nor
    /// starts its cool-down again.
    #[inline]
    pub(crate) fn record(&self, succeeded: bool, probe: bool, now: Instant) {
        if probe {
            if succeeded {
                self.consecutive.store(0, Ordering::Release);
                self.state.store(CLOSED, Ordering::Release);
            } else {
                self.opened_at.store(self.now_ns(now), Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
            }
            self.probing.store(false, Ordering::Release);
            return;
        }
        // Loads first: the common case writes nothing, so engine threads do
        // not pass the breaker's cache line back and forth.
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        if succeeded {
            if self.consecutive.load(Ordering::Acquire) != 0 {
                self.consecutive.store(0, Ordering::Release);
            }
            return;
        }
        let failures = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.settings.failures.max(1) {
            self.opened_at.store(self.now_ns(now), Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
        }
    }
}

/// `duration` in milliseconds, a part of one counted as one (a breaker open
/// for 0.2 ms more is not "open for 0 ms more"), `u64::MAX` past what fits.
fn ceil_millis(duration: Duration) -> u64 {
    let part = u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(duration.as_millis() + part).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_once_after_the_cool_down() {
        let breaker = Breaker::new(BreakerSettings {
            failures: 3,
            cool_down: Duration::from_millis(100),
        });
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.permit(t0), Permit::Call);
            breaker.record(false, false, t0);
        }
        // A success in between starts the count again.
        breaker.record(true, false, t0);
        for _ in 0..3 {
            assert_eq!(breaker.permit(t0), Permit::Call);
            breaker.record(false, false, t0);
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(matches!(
            breaker.permit(t0),
            Permit::Refuse { reopens_in_ms: 100 }
        ));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(breaker.permit(later), Permit::Probe);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        // One probe at a time.
        assert!(matches!(breaker.permit(later), Permit::Refuse { .. }));
        // A failed probe opens it again for a whole cool-down.
        breaker.record(false, true, later);
        assert_eq!(breaker.state(), CircuitState::Open);
        let cooling = later + Duration::from_millis(99);
        assert_eq!(breaker.state_at(cooling), CircuitState::Open);
        assert!(matches!(breaker.permit(cooling), Permit::Refuse { .. }));
        let again = later + Duration::from_millis(100);
        // Its cool-down over, it reads half-open before any call asks: the
        // next one is the probe.
        assert_eq!(breaker.state_at(again), CircuitState::HalfOpen);
        assert_eq!(breaker.permit(again), Permit::Probe);
        breaker.record(true, true, again);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.permit(again), Permit::Call);
    }

    /// A call let through before the breaker opened that ends while it is
    /// open or half-open changes nothing: only the probe closes or reopens
    /// it, and the cool-down runs from the opening.
    #[test]
    fn a_late_call_neither_closes_nor_reopens_it() {
        let breaker = Breaker::new(BreakerSettings {
            failures: 2,
            cool_down: Duration::from_millis(100),
        });
        let t0 = Instant::now();
        // Three calls let through while closed; two fail and open it.
        for _ in 0..3 {
            assert_eq!(breaker.permit(t0), Permit::Call);
        }
        breaker.record(false, false, t0);
        breaker.record(false, false, t0);
        assert_eq!(breaker.state(), CircuitState::Open);
        // The third ends later, successful: still open, cool-down unchanged.
        let t50 = t0 + Duration::from_millis(50);
        breaker.record(true, false, t50);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(breaker.permit(t50), Permit::Refuse { reopens_in_ms: 50 });
        // A late failure does not start the cool-down again.
        breaker.record(false, false, t50);
        let t100 = t0 + Duration::from_millis(100);
        assert_eq!(breaker.permit(t100), Permit::Probe);
        // While the probe is out, late results change nothing either.
        breaker.record(true, false, t100);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        breaker.record(false, false, t100);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(matches!(breaker.permit(t100), Permit::Refuse { .. }));
        // The probe's success closes it and the count starts afresh.
        breaker.record(true, true, t100);
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.record(false, false, t100);
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.record(false, false, t100);
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    /// A cool-down ends neither before its time nor after: the breaker's
    /// clock is not rounded to milliseconds (it was, and a breaker opened
    /// 0.9 ms into a millisecond probed 9.1 ms later with a 10 ms cool-down).
    #[test]
    fn a_cool_down_lasts_its_whole_time() {
        let breaker = Breaker::new(BreakerSettings {
            failures: 1,
            cool_down: Duration::from_millis(10),
        });
        let opened = Instant::now() + Duration::from_micros(900);
        breaker.record(false, false, opened);
        let almost = opened + Duration::from_micros(9_999);
        assert_eq!(breaker.state_at(almost), CircuitState::Open);
        assert_eq!(breaker.permit(almost), Permit::Refuse { reopens_in_ms: 1 });
        let over = opened + Duration::from_millis(10);
        assert_eq!(breaker.state_at(over), CircuitState::HalfOpen);
        assert_eq!(breaker.permit(over), Permit::Probe);
    }

    /// A cool-down longer than `u64::MAX` milliseconds keeps the breaker
    /// open for ever (it was cut to the milliseconds that fit: 384 ms for
    /// this one).
    #[test]
    fn a_cool_down_past_what_fits_in_milliseconds_is_for_ever() {
        for cool_down in [Duration::from_secs(18_446_744_073_709_552), Duration::MAX] {
            let breaker = Breaker::new(BreakerSettings {
                failures: 1,
                cool_down,
            });
            let t0 = Instant::now();
            breaker.record(false, false, t0);
            assert_eq!(breaker.state(), CircuitState::Open);
            let later = t0 + Duration::from_secs(3600);
            assert!(
                matches!(breaker.permit(later), Permit::Refuse { reopens_in_ms } if reopens_in_ms > u64::MAX / 2),
                "{cool_down:?}: {:?}",
                breaker.permit(later)
            );
        }
    }
}
