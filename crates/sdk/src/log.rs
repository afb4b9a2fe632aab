//! Logging from a module: the one way out of the sandbox.
//!
//! In WebAssembly these call the host's `rmq_etl.log` import; the engine tags each
//! line with the module's id and writes it to its own log (target
//! `rustmq_etl::guest`), at most 32 lines a call (lines of a level the logger
//! filters out do not count; the rest are counted in the metric
//! `rustmq_etl_guest_log_lines_dropped_total`; an error line past the limit,
//! or hidden, is still kept for a trap's message to quote). `rustmq-etl
//! test-module` shows every level; `run` shows warnings and errors and `serve`
//! info and up, unless `RUST_LOG` says otherwise
//! (`RUST_LOG=warn,rustmq_etl::guest=debug`). Natively (in tests) they print
//! to standard error.
//!
//! The functions take a text; the macros `debug!`, `info!`, `warn!` and
//! `error!` (at the crate's root: `rustmq_etl_sdk::info!`) take `format!`'s
//! arguments.

/// Severity of a log line, as the host import receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Fine detail.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something odd.
    Warn = 2,
    /// Something failed.
    Error = 3,
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "rmq_etl")]
extern "C" {
    #[link_name = "log"]
    fn host_log(level: i32, ptr: i32, len: i32);
}

/// Logs `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads `len` bytes at `ptr` from this module's memory and
    // checks both against the memory's bounds; it keeps no reference.
    unsafe {
        host_log(level as i32, message.as_ptr() as i32, message.len() as i32)
    };
    #[cfg(all(test, not(target_arch = "wasm32")))]
    tests::LOGGED.with(|logged| logged.borrow_mut().push((level, message.to_owned())));
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// Logs a formatted line at [`Level::Debug`]: `debug!("read {} fields", n)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        $crate::log::debug(&::std::format!($($arg)*))
    };
}

/// Logs a formatted line at [`Level::Info`]: `info!("converted {value} {unit}")`.
///
/// ```
/// let (value, unit) = (71.6, "fahrenheit");
/// rustmq_etl_sdk::info!("converted to {value} {unit}");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::info(&::std::format!($($arg)*))
    };
}

/// Logs a formatted line at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::warn(&::std::format!($($arg)*))
    };
}

/// Logs a formatted line at [`Level::Error`] (the line a trap's error quotes
/// if the call then traps).
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::log::error(&::std::format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        /// What this test thread logged natively, in order.
        pub(super) static LOGGED: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    /// Each macro and function logs at its own level, with `format!`'s text.
    #[test]
    fn each_macro_logs_at_its_level() {
        let n = 3;
        crate::debug!("d{n}");
        crate::info!("i{}", n + 1);
        crate::warn!("w");
        crate::error!("e {n:>2}");
        super::info("plain");
        super::log(Level::Warn, "direct");
        let logged = LOGGED.with(|logged| logged.take());
        assert_eq!(
            logged,
            [
                (Level::Debug, "d3".to_owned()),
                (Level::Info, "i4".to_owned()),
                (Level::Warn, "w".to_owned()),
                (Level::Error, "e  3".to_owned()),
                (Level::Info, "plain".to_owned()),
                (Level::Warn, "direct".to_owned()),
            ]
        );
        // The levels the host import receives (docs/abi.md: 0 to 3).
        assert_eq!(
            [Level::Debug, Level::Info, Level::Warn, Level::Error].map(|l| l as i32),
            [0, 1, 2, 3]
        );
    }
}
