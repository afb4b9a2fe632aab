//! The orchestrator's throughput and latency on the real pool, both cores,
//! 256-byte JSON messages, each beside its baseline measured in the same run:
//!
//! - `single module`, `3-stage pipeline` (design.md's first example),
//!   `complex conditional` (design.md's second): messages per second from
//!   four callers sending batches of 64, beside design.md's target;
//! - `orchestration overhead`: three identity stages through the
//!   orchestrator (one engine thread, batches of 64) against the same three
//!   module occurrences (three instances) called in turn on a thread's own
//!   `LocalPool`, per message, in alternating rounds, by the wall clock and by
//!   the CPU time of the thread doing the work;
//! - `async batches`: identity through the orchestrator from a tokio caller in
//!   batches of 64 (both engine threads) against the same messages on a
//!   thread's own `LocalPool`, per message, in alternating rounds; both sides
//!   make their own copies of the messages in batches of 64 and drop them;
//!   by the wall clock, and by CPU time (the engine threads' and the caller's
//!   together, and the engine threads' alone, against the baseline thread's),
//!   which tells work from waiting;
//! - `latency`: single messages sent at half the single-message rate to an
//!   async caller, paced by a plain thread (open loop); p50 and p99 of each
//!   message's time from being handed over to its answer, and from its
//!   task's call to its answer (what a broker's task waits), beside the same
//!   messages answered at once by a plain thread fed as the pool's workers are
//!   (the hops alone, no engine); then both at a quarter of that rate.
//!
//! ```sh
//! cargo bench -p rustmq-etl-orchestrator --bench throughput
//! cargo bench -p rustmq-etl-orchestrator --bench throughput -- async   # one section
//! cargo bench -p rustmq-etl-orchestrator --bench throughput -- --pin-workers   # PoolConfig::pin_workers (not the overhead row's one worker)
//! ```

/// The allocator the `rustmq-etl` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_etl_config::{Config, Format};
use rustmq_etl_core::{CallRequest, Message, ModuleSpec};
use rustmq_etl_orchestrator::{
    DirectorySource, Disposition, Options, Orchestrator, ProcessOptions,
};
use rustmq_etl_pool::{CompileSettings, LoadedModule, LocalPool, Pool, PoolConfig};

#[path = "support/reading.rs"]
mod reading;
use reading::reading;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn modules() -> DirectorySource {
    DirectorySource::new(root().join("fixtures/modules"))
}

/// A 256-byte web event with a JSON content type and a client address.
fn event() -> Message {
    let mut payload = String::from(r#"{"user":"u-17","action":"view","page":"/home","body":""#);
    while payload.len() < 254 {
        payload.push('x');
    }
    payload.push_str(r#""}"#);
    let mut m = Message::new("events.web.page", payload);
    m.headers.push("content-type", "application/json");
    m.headers.push("client_ip", "203.0.113.7");
    m
}

const CHUNK: usize = 64;
const CALLERS: usize = 4;

/// Messages per second through `o` from `CALLERS` threads sending batches of
/// 64 copies of `message` for about `time`.
fn rate(
    o: &Orchestrator<Pool>,
    message: &Message,
    time: Duration,
    expect: &dyn Fn(&Disposition),
) -> f64 {
    // Warm up: instances on every engine thread.
    for _ in 0..20 {
        for p in o
            .process_batch_blocking(vec![message.clone(); CHUNK], ProcessOptions::default())
            .unwrap()
        {
            expect(&p.disposition);
        }
    }
    let started = Instant::now();
    let total: usize = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut sent = 0;
                    while started.elapsed() < time {
                        let out = o
                            .process_batch_blocking(
                                vec![message.clone(); CHUNK],
                                ProcessOptions::default(),
                            )
                            .unwrap();
                        sent += out.len();
                    }
                    sent
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    total as f64 / started.elapsed().as_secs_f64()
}

fn orchestrator(pool: &Arc<Pool>, yaml: &str) -> Orchestrator<Pool> {
    let config = Config::from_text(yaml, Format::Yaml, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    Orchestrator::new(pool.clone(), &config, modules(), Options::default()).unwrap()
}

fn throughput(pool: &Arc<Pool>) {
    let time = Duration::from_secs(3);
    let single = orchestrator(
        pool,
        "pipeline_id: single\nstages: [{priority: 0, modules: [{module_id: temperature-converter}]}]",
    );
    let converted = |d: &Disposition| {
        assert!(
            matches!(d, Disposition::Delivered(m) if m.payload.windows(10).any(|w| w == b"fahrenheit"))
        )
    };
    let single_rate = rate(
        &single,
        &reading("temperature", "celsius"),
        time,
        &converted,
    );
    let value = orchestrator(
        pool,
        "pipeline_id: single\nstages: [{priority: 0, modules: [{module_id: temperature-converter-value}]}]",
    );
    let value_rate = rate(&value, &reading("temperature", "celsius"), time, &converted);
    println!(
        "throughput: single module (temperature-converter): {single_rate:.0} messages/s; baseline, the same conversion on a serde_json::Value (temperature-converter-value): {value_rate:.0} messages/s (design.md: 100,000/s; goal 1,000,000/s)"
    );

    let config = Config::load(&root().join("fixtures/pipelines/iot-sensor-processing.json"))
        .unwrap()
        .config;
    let iot = Orchestrator::new(pool.clone(), &config, modules(), Options::default()).unwrap();
    let validated = |d: &Disposition| {
        assert!(
            matches!(d, Disposition::Delivered(m) if m.headers.get("x-sensor-valid") == Some("true"))
        )
    };
    let iot_rate = rate(&iot, &reading("temperature", "celsius"), time, &validated);
    println!(
        "throughput: 3-stage pipeline (design.md's first example, a temperature reading: validator, converter): {iot_rate:.0} messages/s (design.md: 50,000/s; goal 500,000/s)"
    );

    let config = Config::load(&root().join("fixtures/pipelines/message-enrichment.json"))
        .unwrap()
        .config;
    let enrichment =
        Orchestrator::new(pool.clone(), &config, modules(), Options::default()).unwrap();
    let enriched = |d: &Disposition| {
        assert!(
            matches!(d, Disposition::Delivered(m) if m.headers.get("geo-country").is_some() && m.headers.get("x-validation") == Some("passed"))
        )
    };
    let enrichment_rate = rate(&enrichment, &event(), time, &enriched);
    println!(
        "throughput: complex conditional (design.md's second example, a web event: validator, geolocation): {enrichment_rate:.0} messages/s (design.md: 25,000/s; goal 250,000/s)"
    );
}

/// Per message: `optimised` and `baseline` in alternating rounds; prints the
/// medians and the median ratio.
fn alternating(
    name: &str,
    rounds: usize,
    mut optimised: impl FnMut() -> f64,
    mut baseline: impl FnMut() -> f64,
) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(optimised());
        b.push(baseline());
    }
    print_medians(&format!("{name}, {rounds} alternating rounds"), a, b);
}

/// Prints the medians of `optimised` and `baseline` (nanoseconds per message,
/// round by round) and the median of the rounds' ratios.
fn print_medians(what: &str, optimised: Vec<f64>, baseline: Vec<f64>) {
    let ratios = optimised
        .iter()
        .zip(&baseline)
        .map(|(a, b)| a / b)
        .collect();
    println!(
        "{what}: optimised {:.1} ns, baseline {:.1} ns, median ratio optimised/baseline {:.2}",
        median(optimised),
        median(baseline),
        median(ratios)
    );
}

/// `identity` loaded `occurrences` times, as a plan loads its occurrences: the
/// first without `custom_config`, the `n`th (from 1) with `custom_config: n`.
fn local_identity(occurrences: usize) -> (LocalPool, Vec<LoadedModule>) {
    let wasm = std::fs::read(root().join("fixtures/modules/identity.wasm")).unwrap();
    let settings = CompileSettings {
        limits: Default::default(),
        bulk_bytes_per_ms: 1_000_000,
        cache: None,
    };
    let modules = (0..occurrences)
        .map(|n| {
            let mut spec = ModuleSpec::new("identity");
            if n > 0 {
                spec.settings.custom_config = n.to_string();
            }
            // As the pool's workers run it: one thread, within its concurrency limit.
            LoadedModule::compile(&spec, &wasm, &settings)
                .unwrap()
                .run_by_threads(1)
        })
        .collect();
    (LocalPool::new(), modules)
}

/// How the baseline comes by its messages.
#[derive(Clone, Copy)]
enum Messages {
    /// One message, called on again and again: the engine thread's side of
    /// the orchestrator, which neither makes nor drops messages.
    Reused,
    /// Copies made and dropped in batches of `CHUNK`, as the orchestrator's
    /// callers make and drop theirs: for a comparison whose other side
    /// includes its caller.
    Owned,
    /// Copies made in batches of `CHUNK` by another thread, handed over, and
    /// handed back to it to be dropped: what the engine thread gets from its
    /// callers, without the orchestration.
    HandedOver,
}

/// Nanoseconds per message of `messages` messages, each called on every one of
/// `modules` in turn.
fn local_calls(
    local: &mut LocalPool,
    modules: &[LoadedModule],
    message: &Message,
    messages: usize,
    how: Messages,
) -> f64 {
    let started = Instant::now();
    // Each call carries the previous call's end as its clock, as a chain does.
    let mut clock = started;
    let mut call = |message: &Message| {
        for module in modules {
            let request = CallRequest::new(message).clock(clock);
            let report = local.call(module, request).unwrap();
            clock = report.ended;
            std::hint::black_box(report);
        }
    };
    match how {
        Messages::Reused => (0..messages).for_each(|_| call(message)),
        Messages::Owned => {
            assert_eq!(messages % CHUNK, 0, "whole batches only");
            for _ in 0..messages / CHUNK {
                let batch = vec![message.clone(); CHUNK];
                batch.iter().for_each(&mut call);
                std::hint::black_box(batch);
            }
        }
        Messages::HandedOver => {
            assert_eq!(messages % CHUNK, 0, "whole batches only");
            let (to_worker, batches) = std::sync::mpsc::sync_channel::<Vec<Message>>(2);
            let (to_dropper, done) = std::sync::mpsc::sync_channel::<Vec<Message>>(2);
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    for _ in 0..messages / CHUNK {
                        to_worker.send(vec![message.clone(); CHUNK]).unwrap();
                    }
                });
                scope.spawn(move || done.into_iter().for_each(drop));
                for batch in batches {
                    batch.iter().for_each(&mut call);
                    to_dropper.send(batch).unwrap();
                }
                drop(to_dropper);
            });
        }
    }
    started.elapsed().as_nanos() as f64 / messages as f64
}

fn overhead() {
    // (One worker is never pinned on two CPUs: `PoolConfig::pin_workers`.)
    let one_thread = Arc::new(
        Pool::new(PoolConfig {
            workers: 1,
            // For the rows on the caller's thread.
            caller_threads: 1,
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let three = orchestrator(
        &one_thread,
        "pipeline_id: p\nstages:\n  - {priority: 0, modules: [{module_id: identity}]}\n  - {priority: 1, modules: [{module_id: identity, instance_config: {custom_config: 1}}]}\n  - {priority: 2, modules: [{module_id: identity, instance_config: {custom_config: 2}}]}",
    );
    let message = reading("temperature", "celsius");
    // The same three occurrences, so that both sides switch between three
    // instances: what is measured is the orchestration.
    let (mut local, modules) = local_identity(3);
    const BATCHES: usize = 20;
    // Each round measured twice: by the wall clock, and by the CPU time of
    // the thread doing the work (the engine thread; the baseline's own),
    // which leaves out the callers' share of the cores and any time the
    // thread was not running.
    let mut cpu = (Vec::new(), Vec::new(), Vec::new());
    alternating(
        "orchestration overhead: 3 identity stages through the orchestrator (one engine thread kept busy by two callers) vs the same 3 module occurrences called in turn on a thread's own LocalPool, per message, wall clock",
        101,
        || {
            // Two callers, so that the engine thread never waits for the next
            // batch: the time per message is the engine thread's.
            let started = Instant::now();
            let engine = cpu_ns(Threads::Engine);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..BATCHES / 2 {
                            let batch = vec![message.clone(); CHUNK];
                            std::hint::black_box(three.process_batch_blocking(batch, ProcessOptions::default()).unwrap());
                        }
                    });
                }
            });
            let messages = (BATCHES * CHUNK) as f64;
            cpu.0.push((cpu_ns(Threads::Engine) - engine) as f64 / messages);
            started.elapsed().as_nanos() as f64 / messages
        },
        || {
            let messages = BATCHES * CHUNK;
            let own = cpu_ns(Threads::This);
            let wall = local_calls(&mut local, &modules, &message, messages, Messages::Reused);
            let reused = cpu_ns(Threads::This);
            cpu.1.push((reused - own) as f64 / messages as f64);
            // Not part of the wall-clock row: the same calls on messages
            // another thread makes and drops, as the engine thread gets them.
            local_calls(&mut local, &modules, &message, messages, Messages::HandedOver);
            cpu.2.push((cpu_ns(Threads::This) - reused) as f64 / messages as f64);
            wall
        },
    );
    print_medians(
        "orchestration overhead, the same alternating rounds by CPU time (the engine thread's vs the baseline thread's)",
        cpu.0.clone(),
        cpu.1.clone(),
    );
    print_medians(
        "  for comparison, the same alternating rounds by CPU time: the baseline's calls on messages another thread makes, hands over in batches and drops (as the engine thread gets them) vs on one reused message",
        cpu.2.clone(),
        cpu.1,
    );
    print_medians(
        "  for comparison, the same alternating rounds by CPU time: the engine thread's vs the baseline's calls on handed-over messages",
        cpu.0,
        cpu.2,
    );

    // The same three stages on the caller's own thread (`OnThisThread`):
    // nothing handed over, no thread woken. The thread makes each batch's 64
    // copies and drops the answers; so does the first baseline, and the
    // second calls on one reused message, as above.
    let mut here = three.on_this_thread().unwrap();
    let (mut on_this_thread, mut owned, mut reused) = (Vec::new(), Vec::new(), Vec::new());
    let (mut on_this_thread_cpu, mut owned_cpu, mut reused_cpu) =
        (Vec::new(), Vec::new(), Vec::new());
    let messages = BATCHES * CHUNK;
    for _ in 0..101 {
        let (started, cpu) = (Instant::now(), cpu_ns(Threads::This));
        for _ in 0..BATCHES {
            let batch = vec![message.clone(); CHUNK];
            std::hint::black_box(here.process_batch(batch, ProcessOptions::default()));
        }
        on_this_thread.push(started.elapsed().as_nanos() as f64 / messages as f64);
        on_this_thread_cpu.push((cpu_ns(Threads::This) - cpu) as f64 / messages as f64);
        let cpu = cpu_ns(Threads::This);
        owned.push(local_calls(
            &mut local,
            &modules,
            &message,
            messages,
            Messages::Owned,
        ));
        let between = cpu_ns(Threads::This);
        owned_cpu.push((between - cpu) as f64 / messages as f64);
        reused.push(local_calls(
            &mut local,
            &modules,
            &message,
            messages,
            Messages::Reused,
        ));
        reused_cpu.push((cpu_ns(Threads::This) - between) as f64 / messages as f64);
    }
    print_medians(
        "orchestration overhead on the caller's thread: 3 identity stages through OnThisThread, on batches of 64 copies the thread makes and drops, vs the same 3 occurrences called in turn on a thread's own LocalPool on copies made and dropped alike, per message, 101 alternating rounds, wall clock",
        on_this_thread.clone(),
        owned,
    );
    print_medians(
        "  the same rounds by the thread's CPU time",
        on_this_thread_cpu.clone(),
        owned_cpu,
    );
    print_medians(
        "  the same rounds, against the baseline on one reused message (as the engine thread's row above), wall clock",
        on_this_thread,
        reused,
    );
    print_medians(
        "  … by the thread's CPU time",
        on_this_thread_cpu,
        reused_cpu,
    );
}

/// Whose CPU time [`cpu_ns`] reads.
enum Threads {
    /// The pool's engine threads, together.
    Engine,
    /// The calling thread.
    This,
}

/// Nanoseconds of CPU time so far: the calling thread's clock, or the
/// engine threads' `schedstat` (Linux; brought up to date whenever a thread
/// stops running, as the engine threads do between rounds).
fn cpu_ns(threads: Threads) -> u64 {
    let run_time = |dir: &Path| -> u64 {
        std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    match threads {
        Threads::This => {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `clock_gettime` writes the `timespec` it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
            now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
        }
        Threads::Engine => std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with("rustmq-etl-wasm"))
            })
            .map(|task| run_time(&task.path()))
            .sum(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn async_batches(pool: &Arc<Pool>) {
    let single = orchestrator(
        pool,
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: identity}]}]",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let message = reading("temperature", "celsius");
    let (mut local, modules) = local_identity(1);
    const BATCHES: usize = 40;
    // CPU time as well, round by round: the engine threads' and the caller's
    // (the runtime runs on this thread) against the baseline thread's.
    let mut cpu = (Vec::new(), Vec::new(), Vec::new());
    alternating(
        "async batches of 64 (identity, both engine threads) vs the same messages (copied and dropped in batches of 64 on both sides) on a thread's own LocalPool, per message",
        101,
        || {
            let started = Instant::now();
            let (engine, caller) = (cpu_ns(Threads::Engine), cpu_ns(Threads::This));
            runtime.block_on(async {
                // Four batches in flight at all times: as one is answered the
                // next is sent, so that both engine threads always have one to
                // run while the caller prepares the next.
                let mut in_flight = tokio::task::JoinSet::new();
                let send = |in_flight: &mut tokio::task::JoinSet<_>| {
                    let (single, batch) = (single.clone(), vec![message.clone(); CHUNK]);
                    in_flight.spawn(async move {
                        single.process_batch(batch, ProcessOptions::default()).await
                    });
                };
                for _ in 0..4 {
                    send(&mut in_flight);
                }
                let mut sent = 4;
                while let Some(answer) = in_flight.join_next().await {
                    std::hint::black_box(answer.unwrap().unwrap());
                    if sent < BATCHES {
                        send(&mut in_flight);
                        sent += 1;
                    }
                }
            });
            let messages = (BATCHES * CHUNK) as f64;
            cpu.0.push((cpu_ns(Threads::Engine) - engine) as f64 / messages);
            cpu.1.push((cpu_ns(Threads::This) - caller) as f64 / messages);
            started.elapsed().as_nanos() as f64 / messages
        },
        || {
            let own = cpu_ns(Threads::This);
            let wall = local_calls(&mut local, &modules, &message, BATCHES * CHUNK, Messages::Owned);
            cpu.2.push((cpu_ns(Threads::This) - own) as f64 / (BATCHES * CHUNK) as f64);
            wall
        },
    );
    let both = cpu.0.iter().zip(&cpu.1).map(|(e, c)| e + c).collect();
    print_medians(
        "  the same alternating rounds by CPU time: the engine threads' and the caller's together vs the baseline thread's",
        both,
        cpu.2.clone(),
    );
    print_medians(
        "  the same alternating rounds by CPU time: the engine threads' alone vs the baseline thread's",
        cpu.0,
        cpu.2,
    );
}

fn latency(pool: &Arc<Pool>) {
    let single = orchestrator(
        pool,
        "pipeline_id: single\nstages: [{priority: 0, modules: [{module_id: temperature-converter}]}]",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let message = reading("temperature", "celsius");
    // The most single messages per second: 64 callers, one message each at a time.
    let max_rate = runtime.block_on(async {
        let started = Instant::now();
        let time = Duration::from_secs(2);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (single, message) = (single.clone(), message.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while started.elapsed() < time {
                        single.process(message.clone()).await.unwrap();
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total as f64 / started.elapsed().as_secs_f64()
    });
    let engine = {
        let single = single.clone();
        move |message: Message| {
            let single = single.clone();
            async move {
                single.process(message).await.unwrap();
            }
        }
    };
    // The baseline: the same hops without the engine. A plain thread, fed as
    // the pool's workers are (a channel of jobs, each with a oneshot for its
    // answer), answers each message at once.
    let (jobs, echo) = echo_thread();
    let hops = move |message: Message| {
        let jobs = jobs.clone();
        async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            jobs.send((message, reply)).unwrap();
            drop(answer.await.unwrap());
        }
    };
    for (share, name) in [(2.0, "half"), (4.0, "a quarter")] {
        let rate = max_rate / share;
        // Each side first once, so that neither always meets the machine
        // as the other left it.
        let (engine, hops) = if share == 2.0 {
            let engine = open_loop(&runtime, engine.clone(), &message, rate);
            (engine, open_loop(&runtime, hops.clone(), &message, rate))
        } else {
            let hops = open_loop(&runtime, hops.clone(), &message, rate);
            (open_loop(&runtime, engine.clone(), &message, rate), hops)
        };
        let ((p50, p99), (base50, base99)) = (engine.handed_over, hops.handed_over);
        println!(
            "throughput: latency of single messages (temperature-converter) at {rate:.0} messages/s, {name} the most single messages measured ({max_rate:.0}/s), from the hand-over to the runtime: p50 {p50:?}, p99 {p99:?}; baseline, the same messages answered at once by a plain thread: p50 {base50:?}, p99 {base99:?} (design.md: < 1 ms; goal < 100 µs)"
        );
        let ((p50, p99), (base50, base99)) = (engine.called, hops.called);
        println!(
            "throughput: … the same, from the task's call to the answer (what a broker's task waits): p50 {p50:?}, p99 {p99:?}; baseline p50 {base50:?}, p99 {base99:?}"
        );
    }
    drop(hops);
    echo.join().unwrap();
    on_this_thread_latency(&single, &message);
}

/// The latency of single messages processed on a consumer's own thread
/// (`OnThisThread`): a pacing thread sends each message over a channel when
/// it is due, as a network would hand it to a consumer blocked on its
/// socket; the consumer takes every message that has arrived as one batch,
/// processes it where it is, and times each message from its sending to
/// its answer. The baseline is the same consumer answering at once: the
/// channel's hop and the consumer's wake-up, the floor of any consumer.
fn on_this_thread_latency(single: &Orchestrator<Pool>, message: &Message) {
    let mut here = single.on_this_thread().unwrap();
    // The most single messages a second on one thread, one at a time.
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        here.process_batch(vec![message.clone()], ProcessOptions::default());
        sent += 1;
    }
    let max_rate = sent as f64 / started.elapsed().as_secs_f64();
    drop(here);
    for (share, name) in [(2.0, "half"), (4.0, "a quarter")] {
        let rate = max_rate / share;
        let engine = consumer_loop(message, rate, || {
            let mut here = single.on_this_thread().unwrap();
            move |batch: Vec<Message>| {
                std::hint::black_box(here.process_batch(batch, ProcessOptions::default()));
            }
        });
        let floor = consumer_loop(message, rate, || {
            |batch: Vec<Message>| drop(std::hint::black_box(batch))
        });
        println!(
            "throughput: latency of single messages (temperature-converter) on a consumer's own thread (OnThisThread, every message arrived taken as one batch) at {rate:.0} messages/s, {name} the most one thread runs one at a time ({max_rate:.0}/s), from the sending: p50 {:?}, p99 {:?}, the most batched {}; baseline, the same consumer answering at once: p50 {:?}, p99 {:?} (design.md: < 1 ms; goal < 100 µs)",
            engine.0, engine.1, engine.2, floor.0, floor.1
        );
    }
}

/// Sends `rate` copies of `message` a second for three seconds (at least
/// 1,000) to a consumer thread, which hands every message arrived, as one
/// batch, to the `process` it made; answers the p50 and p99 of each
/// message's time from its sending to the end of its batch, and the largest
/// batch. Paced as `open_loop` paces.
fn consumer_loop<P: FnMut(Vec<Message>)>(
    message: &Message,
    rate: f64,
    make: impl FnOnce() -> P + Send,
) -> (Duration, Duration, usize) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = ((rate * 3.0) as usize).max(1000);
    let (to_consumer, arrived) = std::sync::mpsc::channel::<(Instant, Message)>();
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            let mut process = make();
            let (mut times, mut most) = (Vec::with_capacity(count), 0);
            while let Ok((at, first)) = arrived.recv() {
                let mut sent = vec![at];
                let mut batch = vec![first];
                for (at, message) in arrived.try_iter() {
                    sent.push(at);
                    batch.push(message);
                }
                most = most.max(batch.len());
                process(batch);
                let ended = Instant::now();
                times.extend(sent.iter().map(|at| ended - *at));
            }
            (times, most)
        });
        paced(count, interval, |_| {
            to_consumer.send((Instant::now(), message.clone())).unwrap()
        });
        drop(to_consumer);
        let (times, most) = consumer.join().unwrap();
        let (p50, p99) = p50_p99(times);
        (p50, p99, most)
    })
}

type Echo = (Message, tokio::sync::oneshot::Sender<Message>);

/// A thread that answers each message it is sent with the message itself,
/// until every sender is dropped.
fn echo_thread() -> (std::sync::mpsc::Sender<Echo>, std::thread::JoinHandle<()>) {
    let (jobs, received) = std::sync::mpsc::channel::<Echo>();
    let thread = std::thread::spawn(move || {
        for (message, reply) in received {
            let _ = reply.send(message);
        }
    });
    (jobs, thread)
}

/// Sends `rate` single messages a second for three seconds in an open loop
/// and answers each one's p50 and p99 time from being handed over to the
/// runtime to its answer, and from its task's call (the task running) to its
/// answer.
fn open_loop<F, Answered>(
    runtime: &tokio::runtime::Runtime,
    send: F,
    message: &Message,
    rate: f64,
) -> Latencies
where
    F: Fn(Message) -> Answered + Clone + Send + Sync,
    Answered: std::future::Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = ((rate * 3.0) as usize).max(1000);
    // Each message's time in nanoseconds, written by its task as it ends: a
    // finished task is freed at once, as a broker's would be, rather than
    // kept with its handle until the end.
    let times: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let answered = Arc::new(AtomicUsize::new(0));
    // Paced by a plain thread rather than tokio's timer (whose millisecond
    // resolution would send the messages in bursts of dozens); each message is
    // handed to the runtime when it is due or, if the thread slept past that,
    // at once, answered or not, and timed from that moment to its answer. The
    // kernel lengthens a short sleep by the thread's timer slack (50 µs by
    // default), so at these rates messages leave in small bursts at the right
    // average rate; a pacing to the microsecond would wake this thread several
    // times as often and take much of a core of two (docs/performance.md).
    let handle = runtime.handle().clone();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            paced(count, interval, |i| {
                let (times, calls, answered) = (times.clone(), calls.clone(), answered.clone());
                let sent = Instant::now();
                let answer = send(message.clone());
                handle.spawn(async move {
                    let called = Instant::now();
                    answer.await;
                    let ended = Instant::now();
                    times[i].store((ended - sent).as_nanos() as u64, Ordering::Relaxed);
                    calls[i].store((ended - called).as_nanos() as u64, Ordering::Relaxed);
                    answered.fetch_add(1, Ordering::Release);
                });
            });
        });
    });
    let waiting = Instant::now();
    while answered.load(Ordering::Acquire) < count {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "{} of {count} messages unanswered two minutes after the last was sent",
            count - answered.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let percentiles = |times: &[AtomicU64]| {
        p50_p99(
            times
                .iter()
                .map(|t| Duration::from_nanos(t.load(Ordering::Relaxed)))
                .collect(),
        )
    };
    Latencies {
        handed_over: percentiles(&times),
        called: percentiles(&calls),
    }
}

/// Calls `send(i)` for each `i` below `count` when it is due, `interval`
/// after the one before, or at once if this thread slept past that.
fn paced(count: usize, interval: Duration, mut send: impl FnMut(usize)) {
    let started = Instant::now();
    for i in 0..count {
        let due = started + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send(i);
    }
}

/// The median and the 99th percentile of `times` (not empty).
fn p50_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99))
}

/// An open loop's p50 and p99.
struct Latencies {
    /// From the pacing thread's hand-over to the runtime to the answer.
    handed_over: (Duration, Duration),
    /// From the task's call (the runtime running it) to the answer: what a
    /// broker's task waits for the engine.
    called: (Duration, Duration),
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument picks the sections
    // whose names contain it (throughput, overhead, async, latency).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs =
        |section: &str| filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()));
    // `--pin-workers`: the pools keep their workers on CPUs.
    let pin_workers = std::env::args().any(|a| a == "--pin-workers");
    let pool = Arc::new(
        Pool::new(PoolConfig {
            pin_workers,
            // For the latency section's consumer on its own thread.
            caller_threads: 1,
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    if runs("throughput") {
        throughput(&pool);
    }
    if runs("overhead") {
        overhead();
    }
    if runs("async") {
        async_batches(&pool);
    }
    if runs("latency") {
        latency(&pool);
    }
}
