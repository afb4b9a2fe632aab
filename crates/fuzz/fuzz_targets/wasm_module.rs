//! Arbitrary WebAssembly modules (wasm-smith) loaded and called through the
//! pool with a 1 MiB memory cap and a 10 ms budget: the host never crashes,
//! every call ends within twice its budget plus a slack (50 ms here: the
//! fuzzer's host code is instrumented and the machine shared; the sandbox's
//! own tests hold 10 ms), and the next call of a good module on the same
//! thread's pool succeeds. Half the modules are made to export the ABI's
//! functions (random bodies), so that they are called, not only compiled.
//! Then a canary, an instance made for its call alone, finds its memory as a
//! new instance's (on Linux it reuses the address space the fuzzed module's
//! instances left, whatever they did with it: `crates/pool/src/memory.rs`).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use rustmq_etl_core::{CallRequest, Message, ModuleSettings, ModuleSpec, Outcome};
use rustmq_etl_pool::{CompileLimits, CompileSettings, LoadedModule, LocalPool};

const BUDGET_MS: u64 = 10;
const SLACK: Duration = Duration::from_millis(50);

fn compile_settings() -> &'static CompileSettings {
    static SETTINGS: OnceLock<CompileSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| CompileSettings {
        limits: CompileLimits::default(),
        bulk_bytes_per_ms: rustmq_etl_pool::bulk_bytes_per_ms().expect("calibrates"),
        cache: None,
    })
}

/// The exports a module must have to be called.
fn abi_exports() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "rmq_abi_version") (result i32) unreachable)
            (func (export "rmq_alloc") (param i32) (result i32) unreachable)
            (func (export "rmq_init") (param i32 i32) (result i64) unreachable)
            (func (export "rmq_transform") (param i32 i32) (result i64) unreachable))"#,
    )
    .unwrap()
}

/// The one import a guest may have.
fn log_import() -> Vec<u8> {
    wat::parse_str(r#"(module (import "rmq_etl" "log" (func (param i32 i32 i32))))"#).unwrap()
}

fn good() -> &'static LoadedModule {
    static GOOD: OnceLock<LoadedModule> = OnceLock::new();
    GOOD.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/modules/identity.wasm"
        );
        let wasm = std::fs::read(path).expect("the identity module");
        LoadedModule::compile(&ModuleSpec::new("identity"), &wasm, compile_settings()).unwrap()
    })
}

/// A module without caching whose every call checks that its memory is as a
/// new instance's (the sandbox tests' `fresh_instance.wat`): it answers
/// "unchanged", or an error saying what it found.
fn canary() -> &'static LoadedModule {
    static CANARY: OnceLock<LoadedModule> = OnceLock::new();
    CANARY.get_or_init(|| {
        let wasm =
            wat::parse_str(include_str!("../../pool/tests/attacks/fresh_instance.wat")).unwrap();
        let fresh = ModuleSettings::default()
            .enable_caching(false)
            .max_creations_per_second(u32::MAX)
            .execution_timeout_ms(1000);
        let spec = ModuleSpec::new("canary").with_settings(fresh);
        LoadedModule::compile(&spec, &wasm, compile_settings()).unwrap()
    })
}

thread_local! {
    /// How many fuzzed modules passed admission and were called.
    static LOADED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static LOCAL: std::cell::RefCell<LocalPool> = std::cell::RefCell::new(LocalPool::new());
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let mut config: wasm_smith::Config = u.arbitrary()?;
    if u.arbitrary()? {
        config.exports = Some(abi_exports());
        config.available_imports = Some(log_import());
    }
    let wasm = wasm_smith::Module::new(config, &mut u)?.to_bytes();
    let settings = ModuleSettings::default()
        .memory_limit_bytes(1 << 20)
        .execution_timeout_ms(BUDGET_MS)
        .max_output_bytes(64 << 10);
    let spec = ModuleSpec::new("fuzzed").with_settings(settings);
    let Ok(module) = LoadedModule::compile(&spec, &wasm, compile_settings()) else {
        return Ok(());
    };
    LOADED.with(|n| {
        n.set(n.get() + 1);
        if n.get() % 1000 == 0 {
            eprintln!(
                "wasm_module: {} generated modules admitted, compiled and called",
                n.get()
            );
        }
    });
    let message = Message::new("fuzz.topic", &b"{\"a\":1}"[..]);
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        for _ in 0..3 {
            let started = Instant::now();
            let _ = local.call(&module, CallRequest::new(&message));
            let took = started.elapsed();
            assert!(
                took <= Duration::from_millis(2 * BUDGET_MS) + SLACK,
                "a call took {took:?} with a {BUDGET_MS} ms budget"
            );
        }
        let answers_unchanged = |local: &mut LocalPool, module: &LoadedModule, failure: &str| {
            let report = local
                .call(module, CallRequest::new(&message))
                .expect("a module of these starts at once");
            assert_eq!(report.result, Ok(Outcome::Unchanged), "{failure}");
        };
        answers_unchanged(&mut local, good(), "the next good call fails");
        drop(module);
        // The fuzzed module's instances go with its slot.
        local.evict_idle();
        answers_unchanged(
            &mut local,
            canary(),
            "a new instance found memory an earlier one left",
        );
    });
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
