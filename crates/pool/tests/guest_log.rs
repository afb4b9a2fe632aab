//! A guest's log lines reach the host's logger at most
//! `MAX_LOG_LINES_PER_CALL` (32) a call, whatever the guest asks: lines past
//! the limit, and the host's own warnings about bad log calls, are not
//! written (the logger is process-wide, so this test has its binary to
//! itself).

use std::sync::atomic::{AtomicUsize, Ordering};

use rustmq_etl_core::{Message, ModuleSpec, Outcome};
use rustmq_etl_pool::{Pool, PoolConfig};

mod attacks;

/// Counts the records of the guest's target.
struct CountingLogger(AtomicUsize);

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if record.target() == "rustmq_etl::guest" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

static LINES: CountingLogger = CountingLogger(AtomicUsize::new(0));

/// 1,000 error-level log calls a message, each with a buffer outside the
/// guest's memory: one host warning for each of the first 32, none after
/// (each was written, without end, while the call had time).
#[test]
fn log_calls_with_buffers_outside_memory_write_no_more_than_the_limit() {
    log::set_logger(&LINES).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let pool = Pool::new(PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    let wasm = attacks::module(
        "(global.set $n (i32.const 0))
         (loop $again
           (call $log (i32.const 3) (i32.const 0xFFFFFF00) (i32.const 16))
           (global.set $n (i32.add (global.get $n) (i32.const 1)))
           (br_if $again (i32.lt_u (global.get $n) (i32.const 1000))))",
        "(global $n (mut i32) (i32.const 0))",
    );
    let module = pool.load(&ModuleSpec::new("bad-logs"), &wasm).unwrap();
    for _ in 0..3 {
        let outcome = pool.call_blocking(&module, &Message::new("t", vec![b'a'; 200]));
        assert_eq!(outcome, Ok(Outcome::Unchanged));
    }
    assert_eq!(LINES.0.load(Ordering::Relaxed), 3 * 32);
}
