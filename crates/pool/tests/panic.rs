//! A panic on a worker thread is contained: the call it was running is
//! answered with an error, and the worker goes on serving; a caller that
//! contains it itself finds no instance left counted in use.
//!
//! The panic comes from the host, not the guest: the process's logger panics
//! when a guest logs a certain line (the logger is process-wide, so this test
//! has its binary to itself).

use rustmq_etl_core::{CallRequest, ErrorKind, Message, ModuleSpec, Outcome};
use rustmq_etl_pool::{CompileLimits, CompileSettings, LoadedModule, LocalPool, Pool, PoolConfig};

struct PanickingLogger;

impl log::Log for PanickingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if record.args().to_string().contains("panic, please") {
            panic!("the logger was asked to panic");
        }
    }

    fn flush(&self) {}
}

#[test]
fn a_panic_on_a_worker_is_answered_and_the_worker_goes_on() {
    log::set_logger(&PanickingLogger).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let pool = Pool::new(PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(1_000_000),
        ..PoolConfig::default()
    })
    .unwrap();
    // Logs "panic, please" when the encoded message is longer than 100 bytes.
    let wasm = wat::parse_str(
        r#"(module
          (import "rmq_etl" "log" (func $log (param i32 i32 i32)))
          (memory (export "memory") 1)
          (func (export "rmq_abi_version") (result i32) (i32.const 1))
          (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "rmq_init") (param i32 i32) (result i64) (i64.const 0))
          (func (export "rmq_transform") (param i32) (param $len i32) (result i64)
            (if (i32.gt_u (local.get $len) (i32.const 100))
              (then (call $log (i32.const 1) (i32.const 32) (i32.const 13))))
            (i64.const 0x0000001000000001))
          (data (i32.const 16) "\00")
          (data (i32.const 32) "panic, please"))"#,
    )
    .unwrap();
    let module = pool.load(&ModuleSpec::new("panics"), &wasm).unwrap();
    let err = pool
        .call_blocking(&module, &Message::new("t", vec![b'a'; 200]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    assert!(
        err.message().contains("the logger was asked to panic"),
        "{err}"
    );
    assert_eq!(module.stats().in_use, 0, "the instance that panicked");
    // The worker lives: the same module, on a fresh instance, serves again.
    for _ in 0..3 {
        assert_eq!(
            pool.call_blocking(&module, &Message::new("t", "ok")),
            Ok(Outcome::Unchanged)
        );
    }
    // A runner whose caller contains the panic itself, as the orchestrator
    // does: the instance that was in use is not counted in use after it
    // either.
    let settings = CompileSettings {
        limits: CompileLimits::default(),
        bulk_bytes_per_ms: 1_000_000,
        cache: None,
    };
    let module = LoadedModule::compile(&ModuleSpec::new("panics"), &wasm, &settings).unwrap();
    let mut local = LocalPool::new();
    let message = Message::new("t", vec![b'a'; 200]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = local.call(&module, CallRequest::new(&message));
    }));
    assert!(caught.is_err());
    assert_eq!(module.stats().in_use, 0);
}
