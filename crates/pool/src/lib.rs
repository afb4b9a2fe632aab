//! Runs rustmq-etl WebAssembly modules on wasmer (Cranelift).
//!
//! - **Registry and artifact cache**: [`Pool::load`] checks a module against the
//!   sandbox's rules (accepted WebAssembly features, imports: nothing but
//!   `rmq_etl.log`, size limits: [`CompileLimits`]), compiles it once on a
//!   thread of its own with a deadline (or loads the compiled artifact from an
//!   [`ArtifactCache`], private and authenticated), checks that it speaks the
//!   rustmq-etl ABI (or the earlier single-function one), and starts one
//!   instance to prove it initialises before swapping it in (kept as its
//!   first warm instance when it caches instances and is warmed up as it
//!   loads: its init runs once for both).
//! - **Instances**: each has its own `Store` on one worker thread (wasmer's
//!   `Store` is not `Send`); a [`LocalPool`] per thread keeps warm instances,
//!   reuses them, recycles them after a number of calls, drops them when idle past
//!   their time-to-live, and discards any that trapped, timed out, hit the memory
//!   limit or answered garbage.
//! - **Limits**: memory (the linear memory and the tables together) is capped
//!   by a custom `Tunables`; time by checks compiled into each module (at
//!   function entries, loop headers and bulk operations) that a watchdog
//!   thread trips when a call's time is up, and by an allowance that bounds
//!   each bulk operation ([`bulk_bytes_per_ms`]). `docs/abi.md`, "What the sandbox
//!   guarantees", has the bounds.
//! - **Trust**: every pointer and length the guest returns is checked against its
//!   memory and the output cap before anything is read.
//!
//! [`Pool`] implements [`rustmq_etl_core::Engine`] (its workers' [`LocalPool`]s
//! implement [`rustmq_etl_core::ModuleRunner`]), so the orchestrator never
//! sees wasmer.
//!
//! ```no_run
//! use rustmq_etl_core::{Message, ModuleSpec, Outcome};
//! use rustmq_etl_pool::{Pool, PoolConfig};
//!
//! let pool = Pool::new(PoolConfig::default())?;
//! let identity = pool.load_file(
//!     &ModuleSpec::new("identity"),
//!     "fixtures/modules/identity.wasm".as_ref(),
//! )?;
//! let out = pool.call_blocking(&identity, &Message::new("t", "payload"))?;
//! assert_eq!(out, Outcome::Unchanged);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod admission;
mod budget;
mod calibrate;
mod cpu;
mod deadline;
mod error;
mod instance;
mod limits;
mod local;
#[cfg(target_os = "linux")]
mod memory;
mod module;
mod pool;
mod stats;

pub use admission::{CompileLimits, TABLE_ELEMENT_BYTES};
pub use calibrate::bulk_bytes_per_ms;
pub use error::{CallError, LoadError, StartError};
pub use instance::MAX_LOG_LINES_PER_CALL;
pub use local::{LoadedModule, LocalPool};
pub use module::{Abi, ArtifactCache, CompileSettings};
pub use pool::{Pool, PoolConfig};

/// The engine the pool compiles a module with (the budget instrumentation,
/// the accepted features, `memory_limit_bytes` for a module without tables),
/// for the benches, which call an instance directly. Not part of the API.
#[doc(hidden)]
pub fn instrumented_engine(memory_limit_bytes: usize) -> wasmer::Engine {
    module::engine(&admission::Admitted::without_tables(memory_limit_bytes))
}
pub use stats::{ModuleStats, Statistics};
