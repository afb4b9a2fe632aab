//! The pool's per-call cost and start-up, each beside a baseline measured in the
//! same run:
//!
//! - `identity_call_256B`: the identity module through a `LocalPool` (take a
//!   warm instance, encode and write the message, call, read and check the
//!   answer, give the instance back) against the floor: a bare wasmer typed call
//!   of an empty function plus a copy of the same 256 bytes into its memory.
//!   Targets: ≤ 3× the floor, ≥ 1,000,000 calls/s.
//! - `pooled_vs_on_demand`: the same call with warm instances against a fresh
//!   instance per call (`enable_caching: false`, creation not rate-limited).
//! - `startup_sample_modules`: loading every fixture module from the artifact
//!   cache against compiling them afresh. Target: ≥ 10× faster.
//!
//! - `metering_overhead_serde`: temperature-converter-value's transform (a
//!   `serde_json` parse, edit and write of a 256-byte reading) compiled with the
//!   pool's instrumentation (`optimised`, what ships) against the same module
//!   compiled without it (`baseline`): the "speed-up" below 1 is the overhead.
//!   Target: ≤ 20%.
//!
//! `identity_call_256B` is also measured in alternating rounds (printed as a
//! median ratio), which a noisy neighbour cannot skew towards one side.
//!
//! It also prints the resident memory of 100 warm instances of a sample module
//! (target ≤ 64 MiB) and how long an infinite loop with a 200 ms budget runs
//! before the watchdog stops it.

#[path = "workload/mod.rs"]
mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rustmq_etl_core::Message;
use rustmq_etl_core::{CallRequest, ModuleSettings, ModuleSpec};
use rustmq_etl_pool::{bulk_bytes_per_ms, ArtifactCache, CompileSettings, LoadedModule, LocalPool};
use workload::{fixtures, settings, Floor, IdentityCall, RoundTrip};

fn per_call(c: &mut Criterion) {
    let rate = bulk_bytes_per_ms().unwrap();
    let mut identity = IdentityCall::new(rate);
    let mut floor = Floor::new();
    let mut group = c.benchmark_group("identity_call_256B");
    group.bench_function("optimised", |b| b.iter(|| identity.call()));
    group.bench_function("baseline", |b| b.iter(|| floor.call()));
    group.finish();
    interleaved("identity_call_256B", || identity.call(), || floor.call());
    let mut group = c.benchmark_group("pooled_vs_on_demand");
    group.bench_function("optimised", |b| b.iter(|| identity.call()));
    let mut fresh = IdentityCall::fresh(rate);
    group.bench_function("baseline", |b| b.iter(|| fresh.call()));
    group.finish();

    resident_memory_of_warm_instances(rate);
    timeout_precision(rate);

    let mut metered = RoundTrip::new(true);
    let mut unmetered = RoundTrip::new(false);
    let mut group = c.benchmark_group("metering_overhead_serde");
    group.bench_function("optimised", |b| b.iter(|| metered.call()));
    group.bench_function("baseline", |b| b.iter(|| unmetered.call()));
    group.finish();
    interleaved(
        "metering_overhead_serde",
        || {
            metered.call();
        },
        || {
            unmetered.call();
        },
    );
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
        "{name}, {ROUNDS} alternating rounds of {CALLS} calls: optimised {:.1} ns, baseline {:.1} ns, median ratio optimised/baseline {:.2}",
        median(&mut a),
        median(&mut b),
        median(&mut ratio)
    );
}

/// Prints how long an infinite loop runs past (or short of) a 200 ms budget.
fn timeout_precision(rate: u64) {
    let wasm = std::fs::read(fixtures().join("hostile-infinite-loop.wasm")).unwrap();
    let budget = ModuleSettings::default().execution_timeout_ms(200);
    let spec = ModuleSpec::new("loop").with_settings(budget);
    let module = LoadedModule::compile(&spec, &wasm, &settings(rate)).unwrap();
    let mut local = LocalPool::new();
    let attack = Message::new("t", "attack");
    let runs: Vec<String> = (0..5)
        .map(|_| {
            let started = std::time::Instant::now();
            let report = local.call(&module, CallRequest::new(&attack)).unwrap();
            assert!(report.result.is_err());
            format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect();
    println!(
        "infinite loop with a 200 ms budget stopped after: {} (bulk rate {rate} bytes/ms)",
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
    let cached = CompileSettings {
        cache: Some(ArtifactCache::new(dir.path().join("cache")).unwrap()),
        ..settings(1_000_000)
    };
    let uncached = settings(1_000_000);
    let load_all = |settings: &CompileSettings| {
        for (id, wasm) in &modules {
            black_box(LoadedModule::compile(&ModuleSpec::new(id), wasm, settings).unwrap());
        }
    };
    load_all(&cached);
    let mut group = c.benchmark_group("startup_sample_modules");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("optimised", |b| b.iter(|| load_all(&cached)));
    group.bench_function("baseline", |b| {
        b.iter_batched(|| (), |()| load_all(&uncached), BatchSize::PerIteration)
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
        &ModuleSpec::new("message-validator"),
        &wasm,
        &settings(rate),
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
