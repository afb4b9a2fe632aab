//! The pool's per-call cost and start-up, each beside a baseline measured in the
//! same run:
//!
//! - `identity_call_256B`: the identity module through a `LocalPool` (take a
//!   warm instance, encode and write the message, call, read and check the
//!   answer, give the instance back) against the floor: a bare wasmer typed call
//!   of an empty function plus a copy of the same 256 bytes into its memory.
//!   Targets: ≤ 3× the floor, ≥ 1,000,000 calls/s.
//! - `pooled_vs_on_demand`: the same call with warm instances against a fresh
//!   instance per call (`enable_caching: false`).
//! - `startup_sample_modules`: loading every fixture module from the artifact
//!   cache against compiling them afresh. Target: ≥ 10× faster.
//!
//! - `metering_overhead_spin`: 1M rounds of the calibration loop compiled with
//!   the metering the pool uses (`optimised`, what ships) against the same loop
//!   without metering (`baseline`): the "speed-up" below 1 is the overhead.
//!
//! `identity_call_256B` is also measured in alternating rounds (printed as a
//! median ratio), which a noisy neighbour cannot skew towards one side.
//!
//! It also prints the resident memory of 100 warm instances of a sample module
//! (target ≤ 64 MiB) and how long an infinite loop with a 200 ms budget runs
//! before metering stops it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rustmq_etl_core::Message;
use rustmq_etl_pool::{fuel_per_ms, ArtifactCache, LoadedModule, LocalPool, ModuleConfig};
use wasmer::{imports, Instance, Module, Store, TypedFunction};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/modules")
}

/// `(module (memory (export "memory") 1) (func (export "f") (param i32 i32) (result i64) i64.const 0))`
const EMPTY: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, //
    0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7e, // type: (i32, i32) -> i64
    0x03, 0x02, 0x01, 0x00, // function
    0x05, 0x03, 0x01, 0x00, 0x01, // memory: one page
    0x07, 0x0e, 0x02, 0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, 0x01, b'f', 0x00,
    0x00, // exports
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x42, 0x00, 0x0b, // code: i64.const 0
];

fn message() -> Message {
    let mut m = Message::new("iot.sensors.temperature", vec![b'x'; 256]);
    m.key = Some("dev-1".into());
    m.headers.push("content-type", "application/json");
    m
}

fn per_call(c: &mut Criterion) {
    let rate = fuel_per_ms().unwrap();
    let identity = std::fs::read(fixtures().join("identity.wasm")).unwrap();
    let message = message();

    let mut group = c.benchmark_group("identity_call_256B");
    let module =
        LoadedModule::compile("identity", &identity, ModuleConfig::default(), rate, None).unwrap();
    let mut local = LocalPool::new();
    local.call(&module, &message).unwrap();
    group.bench_function("optimised", |b| {
        b.iter(|| local.call(&module, black_box(&message)).unwrap())
    });

    let mut store = Store::default();
    let empty = Module::new(&store, EMPTY).unwrap();
    let instance = Instance::new(&mut store, &empty, &imports! {}).unwrap();
    let memory = instance.exports.get_memory("memory").unwrap().clone();
    let f: TypedFunction<(i32, i32), i64> =
        instance.exports.get_typed_function(&store, "f").unwrap();
    let payload = message.payload.clone();
    let mut floor = || {
        memory
            .view(&store)
            .write(1024, black_box(&payload))
            .unwrap();
        f.call(&mut store, 1024, payload.len() as i32).unwrap()
    };
    group.bench_function("baseline", |b| b.iter(&mut floor));
    group.finish();
    interleaved(
        "identity_call_256B",
        || {
            black_box(local.call(&module, black_box(&message)).unwrap());
        },
        || {
            black_box(floor());
        },
    );

    let mut group = c.benchmark_group("pooled_vs_on_demand");
    group.bench_function("optimised", |b| {
        b.iter(|| local.call(&module, black_box(&message)).unwrap())
    });
    let fresh = ModuleConfig {
        enable_caching: false,
        ..ModuleConfig::default()
    };
    let on_demand = LoadedModule::compile("identity-fresh", &identity, fresh, rate, None).unwrap();
    group.bench_function("baseline", |b| {
        b.iter(|| local.call(&on_demand, black_box(&message)).unwrap())
    });
    group.finish();

    resident_memory_of_warm_instances(rate);
    timeout_precision(rate);

    let mut group = c.benchmark_group("metering_overhead_spin");
    for (name, metered) in [("optimised", true), ("baseline", false)] {
        let mut store = if metered {
            Store::new(rustmq_etl_pool::calibration_engine())
        } else {
            Store::default()
        };
        let module = Module::new(&store, rustmq_etl_pool::CALIBRATION_WASM).unwrap();
        let instance = Instance::new(&mut store, &module, &imports! {}).unwrap();
        if metered {
            instance
                .exports
                .get_global("rmq_etl_fuel")
                .unwrap()
                .set(&mut store, wasmer::Value::I64(i64::MAX / 2))
                .unwrap();
        }
        let spin: TypedFunction<i32, ()> =
            instance.exports.get_typed_function(&store, "spin").unwrap();
        group.bench_function(name, |b| {
            b.iter(|| spin.call(&mut store, black_box(1_000_000)).unwrap())
        });
    }
    group.finish();
}

/// Prints the median time per call of `optimised` and `baseline` measured in
/// alternating rounds, and the median of the rounds' ratios. The machine is
/// shared: criterion measures one side after the other, so a neighbour's burst
/// can land on one side only; alternating rounds of a few milliseconds expose
/// both sides to the same neighbours.
fn interleaved(name: &str, mut optimised: impl FnMut(), mut baseline: impl FnMut()) {
    const ROUNDS: usize = 301;
    const CALLS: u32 = 2_000;
    let time = |f: &mut dyn FnMut()| {
        let started = std::time::Instant::now();
        for _ in 0..CALLS {
            f();
        }
        started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
    };
    let (mut a, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let x = time(&mut optimised);
        let y = time(&mut baseline);
        a.push(x);
        b.push(y);
        ratio.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{name}, {ROUNDS} alternating rounds of {CALLS} calls: optimised {:.1} ns, baseline {:.1} ns, median ratio {:.2}",
        median(&mut a),
        median(&mut b),
        median(&mut ratio)
    );
}

/// Prints how long an infinite loop runs past (or short of) a 200 ms budget.
fn timeout_precision(rate: u64) {
    let wasm = std::fs::read(fixtures().join("hostile-infinite-loop.wasm")).unwrap();
    let config = ModuleConfig {
        execution_timeout_ms: 200,
        ..ModuleConfig::default()
    };
    let module = LoadedModule::compile("loop", &wasm, config, rate, None).unwrap();
    let mut local = LocalPool::new();
    let attack = Message::new("t", "attack");
    let runs: Vec<String> = (0..5)
        .map(|_| {
            let started = std::time::Instant::now();
            assert!(local.call(&module, &attack).is_err());
            format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect();
    println!(
        "infinite loop with a 200 ms budget stopped after: {} ({rate} points/ms)",
        runs.join(", ")
    );
}

fn startup(c: &mut Criterion) {
    let modules: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path()).unwrap();
    let load_all = |cache: Option<&ArtifactCache>| {
        for (id, wasm) in &modules {
            black_box(
                LoadedModule::compile(id, wasm, ModuleConfig::default(), 1_000_000, cache).unwrap(),
            );
        }
    };
    load_all(Some(&cache));
    let mut group = c.benchmark_group("startup_sample_modules");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("optimised", |b| b.iter(|| load_all(Some(&cache))));
    group.bench_function("baseline", |b| {
        b.iter_batched(|| (), |()| load_all(None), BatchSize::PerIteration)
    });
    group.finish();
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Prints how much resident memory 100 warm instances of a sample module take.
fn resident_memory_of_warm_instances(rate: u64) {
    let wasm = std::fs::read(fixtures().join("message-validator.wasm")).unwrap();
    let module = LoadedModule::compile(
        "message-validator",
        &wasm,
        ModuleConfig::default(),
        rate,
        None,
    )
    .unwrap();
    let mut local = LocalPool::new();
    local.warm(&module, 1).unwrap();
    let before = resident_bytes();
    local.warm(&module, 101).unwrap();
    let after = resident_bytes();
    let mib = (after.saturating_sub(before)) as f64 / (1 << 20) as f64;
    println!("100 warm instances of message-validator: {mib:.1} MiB resident (target ≤ 64 MiB)");
}

criterion_group!(benches, per_call, startup);
criterion_main!(benches);
