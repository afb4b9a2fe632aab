//! A guest's log lines reach the host's logger at most
//! `MAX_LOG_LINES_PER_CALL` (32) a call, whatever the guest asks: lines past
//! the limit, and the host's own warnings about bad log calls, are not
//! written; lines of a level the logger filters out do not count (the logger
//! is process-wide, so these tests have their binary to themselves, and tell
//! their lines apart by module).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use rustmq_etl_core::{Message, ModuleSpec, Outcome};
use rustmq_etl_pool::{Pool, PoolConfig};

mod attacks;

/// Takes warnings and errors only (as `RUST_LOG=warn` would), and counts the
/// records of the guest's target, by module.
struct CountingLogger {
    bad_logs: AtomicUsize,
    chatty: AtomicUsize,
    starts: AtomicUsize,
    /// The length of the last line of module `long-lines`.
    long_line: AtomicUsize,
    /// The last line of module `forger`.
    forged: Mutex<String>,
}

impl log::Log for CountingLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) || record.target() != "rustmq_etl::guest" {
            return;
        }
        let text = record.args().to_string();
        if text.starts_with("bad-logs: ") {
            self.bad_logs.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with("chatty: ") {
            self.chatty.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with("starts: ") {
            self.starts.fetch_add(1, Ordering::Relaxed);
        } else if let Some(line) = text.strip_prefix("long-lines: ") {
            self.long_line.store(line.len(), Ordering::Relaxed);
        } else if let Some(line) = text.strip_prefix("forger: ") {
            *self.forged.lock().unwrap() = line.to_owned();
        }
    }

    fn flush(&self) {}
}

static LINES: CountingLogger = CountingLogger {
    bad_logs: AtomicUsize::new(0),
    chatty: AtomicUsize::new(0),
    starts: AtomicUsize::new(0),
    long_line: AtomicUsize::new(0),
    forged: Mutex::new(String::new()),
};

fn pool() -> Pool {
    static LOGGER: Once = Once::new();
    LOGGER.call_once(|| {
        log::set_logger(&LINES).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    Pool::new(PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    })
    .unwrap()
}

/// 1,000 error-level log calls a message, each with a buffer outside the
/// guest's memory: one host warning for each of the first 32, none after
/// (each was written, without end, while the call had time).
#[test]
fn log_calls_with_buffers_outside_memory_write_no_more_than_the_limit() {
    let pool = pool();
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
    assert_eq!(LINES.bad_logs.load(Ordering::Relaxed), 3 * 32);
    assert_eq!(module.stats().log_lines_dropped, 3 * (1000 - 32));
}

/// 40 debug lines, which the logger filters out, then an error: the error is
/// written (the hidden lines used up the call's 32 lines, and the error was
/// lost without a word), and nothing counts as dropped.
#[test]
fn lines_the_logger_filters_out_leave_the_allowance_to_the_lines_it_takes() {
    let pool = pool();
    let wasm = attacks::module(
        "(global.set $n (i32.const 0))
         (loop $again
           (call $log (i32.const 0) (i32.const 32) (i32.const 12))
           (global.set $n (i32.add (global.get $n) (i32.const 1)))
           (br_if $again (i32.lt_u (global.get $n) (i32.const 40))))
         (call $log (i32.const 3) (i32.const 32) (i32.const 12))",
        "(global $n (mut i32) (i32.const 0))",
    );
    let module = pool.load(&ModuleSpec::new("chatty"), &wasm).unwrap();
    for _ in 0..3 {
        let outcome = pool.call_blocking(&module, &Message::new("t", vec![b'a'; 200]));
        assert_eq!(outcome, Ok(Outcome::Unchanged));
    }
    assert_eq!(LINES.chatty.load(Ordering::Relaxed), 3);
    assert_eq!(module.stats().log_lines_dropped, 0);
}

/// A load starts the module once to check that it starts; with caching and
/// a warm-up instance (the defaults) that instance is the one kept warm and
/// serving: the module's init runs once, not once for the check and once
/// for the warm-up (each start logs a line here).
#[test]
fn the_instance_a_load_checks_is_the_one_kept_warm() {
    let pool = pool();
    let wasm = attacks::module_with_init(
        "",
        r#"(data (i32.const 64) "started")"#,
        1,
        "(call $log (i32.const 3) (i32.const 64) (i32.const 7))",
    );
    let module = pool.load(&ModuleSpec::new("starts"), &wasm).unwrap();
    assert_eq!(
        pool.call_blocking(&module, &Message::new("t", "")),
        Ok(Outcome::Unchanged)
    );
    let stats = module.stats();
    assert_eq!((stats.creations, stats.hits), (1, 1), "{stats:?}");
    assert_eq!(LINES.starts.load(Ordering::Relaxed), 1, "the init ran once");
}

/// A line longer than 4,096 bytes is cut there: the host reads (and
/// allocates) no more of it than that, whatever length the guest gives.
#[test]
fn a_long_line_is_cut_at_4096_bytes() {
    let pool = pool();
    // 5,000 bytes of the guest's memory, past the message: zeros.
    let wasm = attacks::module(
        "(call $log (i32.const 3) (i32.const 8192) (i32.const 5000))",
        "",
    );
    let module = pool.load(&ModuleSpec::new("long-lines"), &wasm).unwrap();
    let outcome = pool.call_blocking(&module, &Message::new("t", vec![b'a'; 200]));
    assert_eq!(outcome, Ok(Outcome::Unchanged));
    // Each of the 4,096 zero bytes read is written as an escape.
    assert_eq!(
        LINES.long_line.load(Ordering::Relaxed),
        4096 * r"\u{0}".len()
    );
}

/// What a module writes that would end the host's line, or make a terminal
/// show something else (a line end, an escape sequence, a right-to-left
/// override), reaches the log as escapes: the module cannot write a line
/// that looks like the host's. So do its init's error and its error
/// answer's text, which the host's log and dead letters quote.
#[test]
fn a_module_cannot_write_lines_that_pass_for_the_host_s() {
    let pool = pool();
    // "ok", a line end, "[ERROR host] fake", ESC "[31m", U+202E.
    let forged = r#"(data (i32.const 64) "ok\0a[ERROR host] fake\1b[31m\e2\80\ae")"#;
    let shown = r"ok\n[ERROR host] fake\u{1b}[31m\u{202e}";
    let wasm = attacks::module(
        "(call $log (i32.const 3) (i32.const 64) (i32.const 28))",
        forged,
    );
    let module = pool.load(&ModuleSpec::new("forger"), &wasm).unwrap();
    let outcome = pool.call_blocking(&module, &Message::new("t", vec![b'a'; 200]));
    assert_eq!(outcome, Ok(Outcome::Unchanged));
    assert_eq!(*LINES.forged.lock().unwrap(), shown);
    // Its init failing with the same text (at 64, 28 bytes long).
    let wasm = attacks::module_with_init("", forged, 2, "(return (i64.const 0x400000001c))");
    let refused = pool
        .load(&ModuleSpec::new("forger-init"), &wasm)
        .unwrap_err()
        .to_string();
    assert!(refused.contains(shown), "{refused}");
    assert!(!refused.contains(['\n', '\u{1b}', '\u{202e}']), "{refused}");
    // An init error of line ends only is no reason, as a blank one.
    let blank = r#"(data (i32.const 64) "\0a\0d\0a")"#;
    let wasm = attacks::module_with_init("", blank, 2, "(return (i64.const 0x4000000003))");
    let refused = pool
        .load(&ModuleSpec::new("blank-init"), &wasm)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("(its init gave no reason)"), "{refused}");
}
