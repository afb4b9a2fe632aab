//! What the embedding program may set: the dead-letter topic, retries'
//! backoff, the circuit breaker, back-pressure and batching.

use std::time::Duration;

/// How the orchestrator runs. Every field has a documented default; start
/// from `Options::default()` and set what differs with the methods of the
/// same names (`non_exhaustive`: an option added later breaks no program):
///
/// ```
/// use rustmq_etl_orchestrator::Options;
/// let options = Options::default().max_in_flight(1024).dead_letter_topic("orders.dlq");
/// assert_eq!((options.max_in_flight, options.chunk), (1024, 64));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The topic dead letters go to. Default `etl.dead-letter`.
    pub dead_letter_topic: String,
    /// The delays between `RetryWithBackoff` attempts.
    pub backoff: Backoff,
    /// Every module occurrence's circuit breaker.
    pub breaker: BreakerSettings,
    /// Most messages in flight at once; callers beyond it wait (or get
    /// `Busy` from the `try_` calls). Messages are in flight until the
    /// engine is done with the engine batch they are in (`chunk`, below),
    /// even if their caller gave up. Default 4096; 0 counts as 1, and more
    /// than tokio's semaphore grants at once (`usize::MAX` for "no limit")
    /// as its most (2^32 − 1 on 64-bit targets, 2^29 − 1 on 32-bit ones,
    /// where the semaphore holds no more).
    pub max_in_flight: usize,
    /// A batch is split into engine batches of at most this many messages,
    /// each run by one engine thread. Default 64; 0 counts as 1. Two
    /// exceptions: an `in_order` call's engine batch is its whole wave, and
    /// [`OnThisThread`](crate::OnThisThread) runs a wave as one batch on
    /// its caller's thread.
    pub chunk: usize,
    /// The most bytes (topic, key, header names and values, payload) a
    /// module's edits may leave a message with. An answer whose edits would
    /// leave it larger, and larger than it was, fails `invalid_output`, blamed
    /// on the module that grew it (otherwise a message grown stage by stage,
    /// each answer within its module's `max_output_bytes`, reached the next
    /// module past its memory, and that module was blamed). A message that
    /// arrives larger is not refused. In a parallel stage each module's edits
    /// are judged on top of those of the modules declared before it. Default
    /// 16 MiB, as large as the lines and bodies `rustmq-etl run` and `serve`
    /// read (`serve` raises it to its `--max-request-bytes`); 0 counts as no
    /// limit. (A result line is larger than its message — escapes, base64 —
    /// so one of a message near the limit may be too long for `run` to read
    /// back as input.)
    pub max_message_bytes: usize,
}

impl Options {
    /// [`Options::dead_letter_topic`](#structfield.dead_letter_topic).
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = topic.into();
        self
    }

    /// [`Options::backoff`](#structfield.backoff).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// [`Options::breaker`](#structfield.breaker).
    pub fn breaker(mut self, breaker: BreakerSettings) -> Self {
        self.breaker = breaker;
        self
    }

    /// [`Options::max_in_flight`](#structfield.max_in_flight).
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// [`Options::chunk`](#structfield.chunk).
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk;
        self
    }

    /// [`Options::max_message_bytes`](#structfield.max_message_bytes).
    pub fn max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dead_letter_topic: "etl.dead-letter".to_owned(),
            backoff: Backoff::default(),
            breaker: BreakerSettings::default(),
            max_in_flight: 4096,
            chunk: 64,
            max_message_bytes: 16 << 20,
        }
    }
}

/// Retry delays: attempt `n` (1 for the first retry) waits
/// `min(cap, base × factor^(n−1))`, of which a random part up to half is
/// taken off (jitter), so that retries of many messages spread out. The wait
/// holds no thread and counts against the stage and pipeline budgets. Start
/// from `Backoff::default()` and set what differs with the methods of the
/// same names (`non_exhaustive`, as [`Options`]):
///
/// ```
/// use std::time::Duration;
/// use rustmq_etl_orchestrator::Backoff;
/// let backoff = Backoff::default().base(Duration::from_millis(5)).cap(Duration::from_millis(200));
/// assert_eq!(backoff.delay(3, 0.0), Duration::from_millis(20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// Default 10 ms.
    pub base: Duration,
    /// Default 2.
    pub factor: u32,
    /// Default 1 s.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(10),
            factor: 2,
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// [`Backoff::base`](#structfield.base).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// [`Backoff::factor`](#structfield.factor).
    pub fn factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// [`Backoff::cap`](#structfield.cap).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The wait before retry `retry` (1-based), `jitter` in `[0, 1)` taking off
    /// up to half of it.
    /// A jitter outside `[0, 1]` counts as the nearest end, NaN as 0.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        // base × factor^(retry − 1), past what a `Duration` holds counted as
        // `Duration::MAX` (a factor of 0 or 1, or a zero base, never grows).
        let grown = if self.base.is_zero() {
            Duration::ZERO
        } else {
            self.factor
                .checked_pow(retry.saturating_sub(1))
                .and_then(|times| self.base.checked_mul(times))
                .unwrap_or(Duration::MAX)
        };
        let delay = grown.min(self.cap);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // Up to half taken off (a product that cannot overflow, even for a
        // delay of `Duration::MAX`).
        delay.saturating_sub(delay.mul_f64(jitter / 2.0))
    }
}

/// When a module occurrence's breaker opens and how long it stays open.
/// Start from `BreakerSettings::default()` and set what differs with the
/// methods of the same names (`non_exhaustive`, as [`Options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerSettings {
    /// Consecutive failed calls that open it. Default 5; 0 counts as 1 (a
    /// breaker that never lets a call through would be a disabled module:
    /// switch its pipeline off instead).
    pub failures: u32,
    /// How long it stays open before one probe call is let through.
    /// Default 30 s.
    pub cool_down: Duration,
}

impl BreakerSettings {
    /// [`BreakerSettings::failures`](#structfield.failures).
    pub fn failures(mut self, failures: u32) -> Self {
        self.failures = failures;
        self
    }

    /// [`BreakerSettings::cool_down`](#structfield.cool_down).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_cap_and_jitter_takes_off_half_at_most() {
        let b = Backoff::default();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            (1..=9).map(|n| ms(b.delay(n, 0.0))).collect::<Vec<_>>(),
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000]
        );
        assert_eq!(ms(b.delay(3, 0.999_999)), 20);
        assert_eq!(ms(b.delay(3, 0.5)), 30);
        // No cap at all: the longest delays do not overflow.
        let uncapped = Backoff {
            cap: Duration::MAX,
            ..b
        };
        assert_eq!(uncapped.delay(100, 0.0), Duration::MAX);
        assert!(uncapped.delay(100, 0.999) >= Duration::MAX / 2);
        assert_eq!(uncapped.delay(u32::MAX, 0.0), Duration::MAX);
        // Factors that do not grow, at once whatever the retry; odd jitters.
        let flat = Backoff { factor: 1, ..b };
        assert_eq!(flat.delay(u32::MAX, 0.0), b.base);
        let zero = Backoff { factor: 0, ..b };
        assert_eq!(
            (zero.delay(1, 0.0), zero.delay(2, 0.0)),
            (b.base, Duration::ZERO)
        );
        assert_eq!(b.delay(1, f64::NAN), b.base);
        assert_eq!(b.delay(1, -3.0), b.base);
        assert_eq!(b.delay(1, 7.0), b.base / 2);
    }
}
