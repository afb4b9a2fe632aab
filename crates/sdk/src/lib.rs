//! Write rustmq-etl modules in Rust.
//!
//! A module is one ordinary Rust function from a [`Message`] to an [`Outcome`],
//! exported with one line of [`export!`]. It builds for
//! `wasm32-unknown-unknown` (no WASI) and runs in the rustmq-etl engine, which
//! hands it each message selected for it and applies what it answers.
//!
//! # Tutorial
//!
//! ## 1. A crate
//!
//! `rustmq-etl new-module NAME` writes this for you, with the SDK's path from
//! wherever the crate is. By hand, in a directory at the top of a rustmq-etl
//! checkout (the SDK's `path` below is from there):
//!
//! ```toml
//! [package]
//! name = "redact-email"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! # With `features = ["json"]` for `json::Object` (below).
//! rustmq-etl-sdk = { path = "../crates/sdk" }
//!
//! # A workspace of its own: not a member of the checkout's.
//! [workspace]
//!
//! [profile.release]
//! opt-level = 3
//! lto = true
//! codegen-units = 1
//! panic = "abort"
//! strip = true
//! ```
//!
//! ## 2. The function
//!
//! A module sees the whole message — topic, key, headers, payload, timestamp —
//! and answers with one of: [`Outcome::Unchanged`], [`Outcome::Drop`], a set of
//! edits ([`Outcome::edit`]), or [`Outcome::error`]. Edits name only what
//! changes; the engine applies them without copying the rest.
//!
//! ```
//! use rustmq_etl_sdk::{export, Message, Outcome};
//!
//! fn redact(message: &Message) -> Outcome {
//!     let Ok(text) = std::str::from_utf8(message.payload()) else {
//!         return Outcome::error("payload is not UTF-8");
//!     };
//!     if !text.contains('@') {
//!         return Outcome::Unchanged;
//!     }
//!     let redacted: String = text
//!         .split(' ')
//!         .map(|word| if word.contains('@') { "[email]" } else { word })
//!         .collect::<Vec<_>>()
//!         .join(" ");
//!     Outcome::edit()
//!         .set_payload(redacted)
//!         .set_header("x-redacted", "email")
//!         .into()
//! }
//!
//! export!(transform = redact);
//! # fn main() {
//! #     use rustmq_etl_sdk::testing::{run, TestMessage};
//! #     let out = run(redact, &TestMessage::new("t", "mail bob@example.com now"));
//! #     assert_eq!(out.payload, b"mail [email] now");
//! # }
//! ```
//!
//! ## 3. Configuration
//!
//! A module's `custom_config` (JSON, from the pipeline configuration) reaches an
//! optional init function once, when an instance starts. It returns the state
//! every call then receives, or an error that stops the module from loading:
//!
//! ```
//! use rustmq_etl_sdk::{export, Message, Outcome};
//!
//! struct Config {
//!     header: String,
//! }
//!
//! fn init(custom_config: &str) -> Result<Config, String> {
//!     // Modules usually read a JSON object into a struct of their own
//!     // (`json::optional_config`, feature `json`); this one wants a bare string.
//!     let header = custom_config.trim().trim_matches('"').to_owned();
//!     if header.is_empty() || header == "null" {
//!         return Err("none given: name a header".into());
//!     }
//!     Ok(Config { header })
//! }
//!
//! fn tag(config: &Config, message: &Message) -> Outcome {
//!     Outcome::edit().set_header(&config.header, message.topic()).into()
//! }
//!
//! export!(init = init, transform = tag);
//! # fn main() {}
//! ```
//!
//! ## 4. Test natively, build for WebAssembly
//!
//! [`testing::run`] calls a transform function through the same encoding the
//! engine uses, so ordinary `cargo test` covers a module. A module with an
//! init is tested the way the engine runs it: init first, then the transform
//! with its state:
//!
//! ```
//! # use rustmq_etl_sdk::{Message, Outcome};
//! # struct Config { header: String }
//! # fn init(c: &str) -> Result<Config, String> { Ok(Config { header: c.trim_matches('"').into() }) }
//! # fn tag(config: &Config, message: &Message) -> Outcome {
//! #     Outcome::edit().set_header(&config.header, message.topic()).into()
//! # }
//! use rustmq_etl_sdk::testing::{run, TestMessage};
//!
//! let config = init(r#""x-topic""#).unwrap();
//! let out = run(|m| tag(&config, m), &TestMessage::new("orders.eu", "{}"));
//! assert_eq!(out.headers, [("x-topic".to_owned(), "orders.eu".to_owned())]);
//! ```
//!
//! A message the module should refuse: [`testing::reject`] gives the text
//! of its error answer (and fails the test if it kept, dropped or broke the
//! message instead); [`testing::check`] tells every outcome apart, failures
//! by the engine's kind (`guest_error`, `invalid_output`).
//!
//! Natively a module has what the sandbox takes away (std's clock,
//! `println!`): see [`testing::apply`]. Then:
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! ```
//!
//! produces `target/wasm32-unknown-unknown/release/<name>.wasm` (Cargo writes
//! a `-` of the crate's name as `_`). The engine loads a pipeline's module as
//! `<modules directory>/<module_id>.wasm`: copy the file there under the
//! module id the pipeline gives it (`rustmq-etl new-module` prints the
//! command). The engine
//! admits WebAssembly SIMD, and a module's `json::Object` looks for the end
//! of each string sixteen bytes a step with it, with no build flag needed
//! (`RUSTFLAGS="-C target-feature=+simd128"` lets the compiler use SIMD
//! elsewhere too, and inline that search, as the sample modules are built:
//! 1.8% fewer engine instructions a message for `temperature-converter`).
//!
//! ## 5. Rules of the sandbox
//!
//! A module has no filesystem, network, clock, randomness or environment: its
//! only way out is [`log`]. Each instance has a memory limit and every call a
//! time budget (`instance_config` in the pipeline). A panic, a trap, running out
//! of memory or time fails that call only; the engine discards the instance and
//! starts a fresh one. A panic's place and message are logged at error level
//! before the module aborts, and the engine's `trap` error quotes that line
//! (`hit unreachable …; its last error log line: panicked at src/lib.rs:11: …`). Instances are reused between calls, so a module may keep
//! caches in its state, but must not rely on seeing every message: the engine runs
//! several instances at once and recycles them.
//!
//! # The ABI
//!
//! [`export!`] generates the exports `docs/abi.md` specifies (`rmq_abi_version`,
//! `rmq_alloc`, `rmq_init`, `rmq_transform`); the byte encoding is the
//! `rustmq-etl-abi` crate, shared with the host.
//!
//! # Crate features
//!
//! - `json`: `json::Object`, to read fields of a JSON object payload and
//!   write a new payload with some of them changed, without parsing the
//!   whole document into values and writing it all again.
#![warn(missing_docs)]

#[cfg(feature = "json")]
pub mod json;
pub mod log;
mod outcome;
#[doc(hidden)]
pub mod rt;
pub mod testing;

pub use outcome::{Edits, Outcome};
pub use rustmq_etl_abi::MessageView as Message;

/// Exports a transform function (and optionally an init function) with the
/// rustmq-etl ABI.
///
/// - `export!(transform = f)` with `fn f(&Message) -> Outcome`;
/// - `export!(init = i, transform = f)` with
///   `fn i(custom_config: &str) -> Result<S, String>` and
///   `fn f(&S, &Message) -> Outcome`.
///
/// Use it once per crate.
#[macro_export]
macro_rules! export {
    (transform = $transform:path $(,)?) => {
        $crate::__export_common!();
        #[no_mangle]
        pub extern "C" fn rmq_init(ptr: i32, len: i32) -> i64 {
            $crate::rt::init_stateless(ptr, len)
        }
        // Without state the transform is called directly, not through the
        // bound closure `init` stores.
        #[no_mangle]
        pub extern "C" fn rmq_transform(ptr: i32, len: i32) -> i64 {
            $crate::rt::transform_stateless(ptr, len, $transform)
        }
    };
    (init = $init:path, transform = $transform:path $(,)?) => {
        $crate::__export_common!();
        #[no_mangle]
        pub extern "C" fn rmq_init(ptr: i32, len: i32) -> i64 {
            $crate::rt::init(ptr, len, $init, $transform)
        }
        #[no_mangle]
        pub extern "C" fn rmq_transform(ptr: i32, len: i32) -> i64 {
            $crate::rt::transform(ptr, len)
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_common {
    () => {
        #[no_mangle]
        pub extern "C" fn rmq_abi_version() -> i32 {
            $crate::rt::ABI_VERSION
        }
        #[no_mangle]
        pub extern "C" fn rmq_alloc(len: i32) -> i32 {
            $crate::rt::alloc(len)
        }
    };
}
