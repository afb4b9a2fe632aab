//! Loading, versions, the artifact cache, waiting callers, warm-up, recycling,
//! idle eviction and statistics, with real modules.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_etl_core::{
    Busy, CallReport, CallRequest, ErrorKind, Message, ModuleRunner, ModuleSettings, ModuleSpec,
    Outcome,
};
use rustmq_etl_pool::{
    CompileLimits, CompileSettings, LoadError, LoadedModule, LocalPool, Pool, PoolConfig,
};

mod attacks;

fn wasm(name: &str) -> Vec<u8> {
    let path: PathBuf =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join(format!("../../fixtures/modules/{name}.wasm"));
    std::fs::read(path).unwrap()
}

/// A fixed bulk rate keeps these tests from calibrating again and again.
const RATE: u64 = 1_000_000;

/// The settings of a `LocalPool` of these tests.
fn settings() -> CompileSettings {
    CompileSettings {
        limits: CompileLimits::default(),
        bulk_bytes_per_ms: RATE,
        cache: None,
    }
}

fn spec(id: &str, settings: ModuleSettings) -> ModuleSpec {
    ModuleSpec::new(id).with_settings(settings)
}

/// A module compiled for a `LocalPool`.
fn compile(id: &str, name: &str, module: ModuleSettings) -> LoadedModule {
    LoadedModule::compile(&spec(id, module), &wasm(name), &settings()).unwrap()
}

/// One call on a `LocalPool`, which must start now.
fn call(local: &mut LocalPool, module: &LoadedModule, message: &Message) -> CallReport {
    local
        .call(module, CallRequest::new(message))
        .expect("the call starts at once")
}

/// A pool of one worker that gives one caller's thread a runner, its idle
/// instances dropped every `cleaner_interval`.
fn one_worker_one_caller(cleaner_interval: Duration) -> Pool {
    Pool::new(PoolConfig {
        workers: 1,
        caller_threads: 1,
        cleaner_interval,
        bulk_bytes_per_ms: Some(RATE),
        ..PoolConfig::default()
    })
    .unwrap()
}

fn pool(workers: usize) -> Pool {
    Pool::new(PoolConfig {
        workers,
        bulk_bytes_per_ms: Some(RATE),
        ..PoolConfig::default()
    })
    .unwrap()
}

/// A guest refused memory that logs an error and then aborts fails
/// `memory_limit` with the sizes, and quotes its error line as a trap does
/// (its control bytes as escapes, as the log writes them).
#[test]
fn a_memory_limit_error_says_the_sizes_and_quotes_the_last_error_line() {
    let wasm = attacks::module(
        "(drop (memory.grow (i32.const 100)))
         (call $log (i32.const 3) (i32.const 32) (i32.const 12))
         unreachable",
        "",
    );
    let module = LoadedModule::compile(
        &spec(
            "greedy",
            ModuleSettings::default().memory_limit_bytes(4 << 16),
        ),
        &wasm,
        &settings(),
    )
    .unwrap();
    let mut local = LocalPool::new();
    let report = call(&mut local, &module, &Message::new("t", vec![b'a'; 200]));
    let error = report.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MemoryLimit, "{error}");
    assert_eq!(
        error.message(),
        "tried to grow its memory from 131072 to 6684672 bytes, past its limit of 262144 \
         bytes; its last error log line: \\u{3}\\u{7}\\u{0}\\u{0}\\u{0}refused"
    );
}

/// A task that holds its worker until released (or 30 s have passed), and
/// says which it was.
struct Hold {
    running: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
    released: std::sync::mpsc::Sender<bool>,
}

impl rustmq_etl_core::Task<LocalPool> for Hold {
    fn run(&mut self, _: &mut LocalPool) -> rustmq_etl_core::Step {
        self.running.send(()).unwrap();
        let by_release = self.release.recv_timeout(Duration::from_secs(30)).is_ok();
        self.released.send(by_release).unwrap();
        rustmq_etl_core::Step::Done
    }
}

/// A task that first waits a millisecond (as a batch waits for a retry's
/// delay), then holds its worker as [`Hold`] does.
struct Resumed {
    waited: bool,
    hold: Hold,
}

impl rustmq_etl_core::Task<LocalPool> for Resumed {
    fn run(&mut self, pool: &mut LocalPool) -> rustmq_etl_core::Step {
        if !self.waited {
            self.waited = true;
            return rustmq_etl_core::Step::WaitUntil(Instant::now() + Duration::from_millis(1));
        }
        self.hold.run(pool)
    }
}

/// Loads a module on a pool of two workers while one of them runs `task`
/// (made from a [`Hold`]); says whether the load returned before the task
/// was released, that is without waiting behind it.
fn load_beside(task: impl FnOnce(Hold) -> Box<dyn rustmq_etl_core::Task<LocalPool>>) -> bool {
    use rustmq_etl_core::Engine;
    let pool = pool(2);
    let (running, is_running) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let (released, was_released) = std::sync::mpsc::channel();
    let hold = Hold {
        running,
        release: release_rx,
        released,
    };
    assert!(pool.submit(task(hold)).is_ok());
    is_running.recv().unwrap();
    pool.load(&ModuleSpec::new("identity"), &wasm("identity"))
        .unwrap();
    let _ = release.send(());
    was_released.recv().unwrap()
}

/// A load's start check goes to an idle worker, not to one busy with a long
/// job and nothing queued (it waited for the whole job: a reload during a
/// batch of slow messages took as long as the batch).
#[test]
fn a_load_does_not_wait_behind_a_running_job_while_a_worker_is_idle() {
    assert!(
        load_beside(|hold| Box::new(hold)),
        "the load waited for the running job"
    );
}

/// The same when the long job is one that was put off and resumed (it was
/// no longer counted once put off).
#[test]
fn a_load_does_not_wait_behind_a_resumed_job_while_a_worker_is_idle() {
    assert!(
        load_beside(|hold| Box::new(Resumed {
            waited: false,
            hold
        })),
        "the load waited for the resumed job"
    );
}

/// `load` and `call_blocking` called (against their documentation) from a
/// tokio task: each wait spends the task's cooperative budget, and once it
/// is spent tokio puts off wake-ups until the task yields, which it never
/// does while blocked. 140 loads spend it, 300 calls twice over; they all
/// end.
#[test]
fn blocking_calls_from_an_async_task_end() {
    let pool = Arc::new(pool(1));
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answered = runtime.block_on(async move {
            tokio::spawn(async move {
                let identity = wasm("identity");
                let mut module = pool.load(&ModuleSpec::new("m"), &identity).unwrap();
                for _ in 1..140 {
                    module = pool.load(&ModuleSpec::new("m"), &identity).unwrap();
                }
                let message = Message::new("t", "hello");
                (0..300)
                    .filter(|_| pool.call_blocking(&module, &message).is_ok())
                    .count()
            })
            .await
            .unwrap()
        });
        let _ = done.send(answered);
    });
    // (Two minutes: the loads and calls take a few seconds; on the old code
    // they never ended.)
    assert_eq!(finished.recv_timeout(Duration::from_secs(120)), Ok(300));
}

/// Loading a new version does not disturb calls running on the old one; a
/// version that does not compile, or whose init refuses its configuration,
/// is refused and the one in use keeps serving.
#[test]
fn a_new_version_loads_beside_the_old_and_a_broken_one_is_refused() {
    let pool = Arc::new(pool(2));
    let old = pool.load(&ModuleSpec::new("m"), &wasm("identity")).unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, old) = (pool.clone(), old.clone());
            std::thread::spawn(move || {
                let message = Message::new("t", "hello");
                (0..200)
                    .map(|_| pool.call_blocking(&old, &message))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let new = pool
        .load(&ModuleSpec::new("m"), &wasm("legacy-uppercase"))
        .unwrap();
    assert!(new.version() > old.version());
    for caller in callers {
        for result in caller.join().unwrap() {
            assert_eq!(result, Ok(Outcome::Unchanged), "a call on the old version");
        }
    }
    let upper = pool
        .call_blocking(&new, &Message::new("t", "hello"))
        .unwrap();
    assert!(
        matches!(&upper, Outcome::Edited(edits) if edits.len() == 1),
        "{upper:?}"
    );

    let err = pool.load(&ModuleSpec::new("m"), b"not wasm").unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    let bad_config = ModuleSettings::default().custom_config("{\"unit\": \"parsecs\"}");
    let err = pool
        .load(&spec("m", bad_config), &wasm("pressure-normalizer"))
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown target unit \"parsecs\""),
        "{err}"
    );
    assert_eq!(
        pool.call_blocking(&new, &Message::new("t", "hello")),
        Ok(upper)
    );
}

/// A pool of one worker keeping its compiled modules in `dir`.
fn cached_in(dir: &std::path::Path) -> PoolConfig {
    PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        artifact_cache: Some(dir.to_owned()),
        ..PoolConfig::default()
    }
}

#[test]
fn the_artifact_cache_skips_compilation_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let config = cached_in(dir.path());
    let bytes = wasm("message-formatter");
    let formatter = ModuleSpec::new("f");
    {
        let pool = Pool::new(config.clone()).unwrap();
        assert!(!pool.load(&formatter, &bytes).unwrap().from_cache());
    }
    let pool = Pool::new(config.clone()).unwrap();
    let module = pool.load(&formatter, &bytes).unwrap();
    assert!(module.from_cache(), "a restart reuses the artifact");
    let out = pool
        .call_blocking(&module, &Message::new("t", "{ \"a\" : 1 }"))
        .unwrap();
    assert!(
        matches!(&out, Outcome::Edited(edits) if edits.contains(&rustmq_etl_core::Edit::SetPayload("{\"a\":1}".into()))),
        "{out:?}"
    );

    // Damage every artifact: it is detected, recompiled and rewritten.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "artifact") {
            continue;
        }
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, data).unwrap();
    }
    assert!(!pool.load(&formatter, &bytes).unwrap().from_cache());
    assert!(pool.load(&formatter, &bytes).unwrap().from_cache());
}

/// An artifact is bound to the module it was compiled from: one module's
/// artifact copied over another's file name (by a user tidying the cache,
/// or by someone who may write it) is refused, and the module is compiled
/// from its own bytes, behaving as itself.
#[test]
fn an_artifact_copied_over_another_modules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = cached_in(dir.path());
    let artifacts = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "artifact"))
            .collect()
    };
    let (formatter, upper) = (wasm("message-formatter"), wasm("legacy-uppercase"));
    let pool = Pool::new(config.clone()).unwrap();
    pool.load(&ModuleSpec::new("f"), &formatter).unwrap();
    let formatter_artifact = artifacts().into_iter().next().expect("stored");
    pool.load(&ModuleSpec::new("u"), &upper).unwrap();
    let upper_artifact = artifacts()
        .into_iter()
        .find(|p| *p != formatter_artifact)
        .expect("stored");
    drop(pool);
    std::fs::copy(&formatter_artifact, &upper_artifact).unwrap();
    let pool = Pool::new(config).unwrap();
    let module = pool.load(&ModuleSpec::new("u"), &upper).unwrap();
    assert!(!module.from_cache(), "another module's artifact was used");
    assert_eq!(
        pool.call_blocking(&module, &Message::new("t", "shout")),
        Ok(Outcome::Edited(vec![rustmq_etl_core::Edit::SetPayload(
            "SHOUT".into()
        )]))
    );
}

/// A new module version is a new artifact: the cache keeps within its size
/// by removing, as it stores one, the artifacts used the longest ago (a load
/// counts as a use), never the one it just stored.
#[test]
fn the_artifact_cache_keeps_within_its_size_removing_what_was_used_longest_ago() {
    use std::collections::BTreeSet;
    use std::time::SystemTime;

    let dir = tempfile::tempdir().unwrap();
    let artifacts = || -> BTreeSet<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "artifact"))
            .collect()
    };
    let config = |max_bytes| PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        artifact_cache: Some(dir.path().to_owned()),
        artifact_cache_max_bytes: max_bytes,
        ..PoolConfig::default()
    };
    // Four versions of `identity`, told apart by a custom section (`v0` to
    // `v3`): four artifacts of one size.
    let version = |n: u8| {
        let mut bytes = wasm("identity");
        bytes.extend([0, 3, 2, b'v', b'0' + n]);
        bytes
    };
    let load = |pool: &Pool, n: u8| {
        pool.load(&ModuleSpec::new("identity"), &version(n))
            .unwrap()
            .from_cache()
    };
    // Each version's artifact, stored by a cache with room for all.
    let mut files = Vec::new();
    {
        let pool = Pool::new(config(u64::MAX)).unwrap();
        for n in 0..4 {
            let before = artifacts();
            assert!(!load(&pool, n));
            let new: Vec<PathBuf> = artifacts().difference(&before).cloned().collect();
            assert_eq!(new.len(), 1, "version {n} stored one artifact");
            files.push(new[0].clone());
        }
    }
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(files
        .iter()
        .all(|f| std::fs::metadata(f).unwrap().len() == size));
    let [a, b, c, d] = <[PathBuf; 4]>::try_from(files).unwrap();
    std::fs::remove_file(&d).unwrap();
    // A used three hours ago, B two, C one.
    for (path, hours) in [(&a, 3), (&b, 2), (&c, 1)] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600 * hours))
            .unwrap();
    }

    // Room for three. Loading A makes it the one used last: storing D then
    // removes B, and storing B again removes C.
    let pool = Pool::new(config(3 * size)).unwrap();
    assert!(load(&pool, 0), "A is loaded from the cache");
    assert_eq!(artifacts().len(), 3, "a load removes nothing");
    assert!(!load(&pool, 3), "D is compiled and stored");
    assert_eq!(
        artifacts(),
        BTreeSet::from([a.clone(), c.clone(), d.clone()])
    );
    assert!(!load(&pool, 1), "B was removed: compiled again");
    assert_eq!(artifacts(), BTreeSet::from([a, b, d]));

    // A cache smaller than any artifact keeps the one it just stored.
    let pool = Pool::new(config(1)).unwrap();
    assert!(!load(&pool, 2));
    assert_eq!(artifacts(), BTreeSet::from([c]));
}

/// Keeping within its size removes only what the cache names itself: an
/// `*.artifact` of someone else's, a link or a directory under an artifact's
/// name are left alone (the directory may be one the user named).
#[test]
fn the_artifact_cache_removes_only_its_own_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let named = |c: char| {
        dir.path()
            .join(format!("{}.artifact", c.to_string().repeat(64)))
    };
    let own_old = named('a');
    std::fs::write(&own_old, b"an artifact of an earlier module version").unwrap();
    let foreign = dir.path().join("firmware.artifact");
    std::fs::write(&foreign, b"the user's own file").unwrap();
    let upper = dir.path().join(format!("{}.artifact", "A".repeat(64)));
    std::fs::write(&upper, b"not a name the cache makes").unwrap();
    let target = outside.path().join("elsewhere");
    std::fs::write(&target, b"a file a link points to").unwrap();
    std::os::unix::fs::symlink(&target, named('b')).unwrap();
    std::fs::create_dir(named('c')).unwrap();

    let pool = Pool::new(PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        artifact_cache: Some(dir.path().to_owned()),
        artifact_cache_max_bytes: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    assert!(!pool
        .load(&ModuleSpec::new("identity"), &wasm("identity"))
        .unwrap()
        .from_cache());
    assert!(!own_old.exists(), "the cache's own old artifact is removed");
    for kept in [&foreign, &upper, &target] {
        assert!(kept.is_file(), "{} is left alone", kept.display());
    }
    assert!(std::fs::symlink_metadata(named('b')).unwrap().is_symlink());
    assert!(named('c').is_dir());
}

/// Calls beyond `max_concurrent_instances` wait (their worker serves other
/// calls meanwhile) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_beyond_max_concurrent_instances_wait_instead_of_failing() {
    let pool = Arc::new(pool(4));
    let one_at_a_time = ModuleSettings::default().max_concurrent_instances(1);
    let slow = pool
        .load(&spec("slow", one_at_a_time), &wasm("hostile-slow"))
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, slow) = (pool.clone(), slow.clone());
            tokio::spawn(async move { pool.call(&slow, &Message::new("t", "1")).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Outcome::Edited(_))));
    }
    let stats = slow.stats();
    assert_eq!(stats.calls, 8);
    assert!(stats.creations <= 4, "at most one per worker: {stats:?}");
}

/// On a thread's own `LocalPool`, a module at its limit answers `Busy` at
/// once: nothing waits, nothing runs. (A trap discards the instance: the
/// next call needs a new one.)
#[test]
fn a_local_pool_answers_busy_instead_of_waiting() {
    let throttled = ModuleSettings::default().max_creations_per_second(1);
    let module = compile("busy", "hostile-trap", throttled);
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    call(&mut local, &module, &message);
    let started = Instant::now();
    let Err(Busy { until }) = local.call(&module, CallRequest::new(&message)) else {
        panic!("a second creation within the second must wait");
    };
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "it did not wait"
    );
    assert!(
        until > started + Duration::from_millis(500),
        "{:?}",
        until - started
    );
    assert_eq!(module.stats().calls, 1, "the call put off was not counted");
}

/// A module that creates an instance for every call is spaced at its
/// allowed rate: after a burst of a tenth of a second's worth, each call is
/// put off by at most one interval, never by most of a second (which stalled
/// every message queued behind it).
#[test]
fn throttled_creations_are_spaced_not_stalled() {
    let throttled = ModuleSettings::default().max_creations_per_second(100);
    let module = compile("spaced", "hostile-trap", throttled);
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    let (mut ran, mut longest) = (0, Duration::ZERO);
    let started = Instant::now();
    while ran < 30 {
        let asked = Instant::now();
        match local.call(&module, CallRequest::new(&message)) {
            Ok(_) => ran += 1,
            Err(Busy { until }) => {
                longest = longest.max(until.saturating_duration_since(asked));
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
        }
    }
    assert!(
        longest <= Duration::from_millis(10),
        "put off by {longest:?}"
    );
    // A burst of 10, then one every 10 ms: 30 calls take at least 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(module.stats().creations, 30);
}

/// A module without caching creates an instance for every call, which is
/// what it asked for: the creation throttle does not put its calls off.
#[test]
fn a_module_without_caching_is_not_throttled() {
    let uncached = ModuleSettings::default()
        .max_creations_per_second(1)
        .enable_caching(false);
    let module = compile("uncached", "identity", uncached);
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    for _ in 0..5 {
        assert_eq!(
            call(&mut local, &module, &message).result,
            Ok(Outcome::Unchanged)
        );
    }
    assert_eq!(
        module.stats().creations,
        5,
        "a fresh instance for every call"
    );
}

/// An instance made for a call meets the call's deadline: without caching
/// (an instance for every call) the init runs within the deadline, and an
/// init slower than what the stage or pipeline has left fails the call with
/// the deadline's kind; with caching the init runs to its end within the
/// module's own budget (holding that one message past its deadline), the
/// call fails with the deadline's kind, counted as such, and the instance
/// serves the next call.
#[test]
fn an_instance_made_for_a_call_starts_within_the_calls_deadline() {
    // An init that counts down from 300 million: far longer than the
    // deadline below, far shorter than the module's own budget.
    let slow_init = wat::parse_str(
        r#"(module
          (memory (export "memory") 1)
          (func (export "rmq_abi_version") (result i32) (i32.const 1))
          (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "rmq_init") (param i32 i32) (result i64)
            (local $n i32)
            (local.set $n (i32.const 300000000))
            (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1)))
              (br_if $l (local.get $n)))
            (i64.const 0))
          (func (export "rmq_transform") (param i32 i32) (result i64)
            (i64.const 0x0000001000000001))
          (data (i32.const 16) "\00"))"#,
    )
    .unwrap();
    let uncached = ModuleSettings::default()
        .enable_caching(false)
        .execution_timeout_ms(60_000);
    let module = LoadedModule::compile(
        &spec("slow-init", uncached.clone()),
        &slow_init,
        &settings(),
    )
    .unwrap();
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    let report = local
        .call(
            &module,
            CallRequest::new(&message).deadline(
                Instant::now() + Duration::from_millis(5),
                ErrorKind::StageTimeout,
            ),
        )
        .expect("no throttle without caching");
    let error = report.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StageTimeout);
    assert!(error.message().contains("starting its instance"), "{error}");
    assert_eq!(
        module.stats().creations,
        0,
        "a start cut off makes no instance"
    );
    assert_eq!(
        module.stats().failures,
        [(ErrorKind::StageTimeout, 1)],
        "counted once"
    );

    let cached = uncached.enable_caching(true);
    let module =
        LoadedModule::compile(&spec("slow-init-cached", cached), &slow_init, &settings()).unwrap();
    let report = local
        .call(
            &module,
            CallRequest::new(&message).deadline(
                Instant::now() + Duration::from_millis(5),
                ErrorKind::PipelineTimeout,
            ),
        )
        .unwrap();
    let error = report.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PipelineTimeout);
    assert!(
        error.message().contains("while its instance started"),
        "{error}"
    );
    assert_eq!(
        module.stats().failures,
        [(ErrorKind::PipelineTimeout, 1)],
        "counted as failed"
    );
    // Kept: the next call runs on it, without starting another.
    let creations = module.stats().creations;
    assert_eq!(
        call(&mut local, &module, &message).result,
        Ok(Outcome::Unchanged)
    );
    assert_eq!(module.stats().creations, creations);
}

/// A request's deadline that has passed fails the call at once with the
/// deadline's kind, without running the module.
#[test]
fn a_passed_deadline_fails_the_call_with_its_kind() {
    let module = compile("late", "identity", ModuleSettings::default());
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    assert_eq!(
        call(&mut local, &module, &message).result,
        Ok(Outcome::Unchanged)
    );
    // Of two deadlines the earlier applies: here, one that has passed.
    let passed = Instant::now() - Duration::from_millis(1);
    let report = local
        .call(
            &module,
            CallRequest::new(&message)
                .deadline(passed, ErrorKind::StageTimeout)
                .deadline(passed + Duration::from_secs(60), ErrorKind::PipelineTimeout),
        )
        .unwrap();
    assert_eq!(
        report.result.map_err(|e| e.kind()),
        Err(ErrorKind::StageTimeout)
    );
    assert_eq!(module.stats().calls, 1, "the module did not run");
}

/// A bulk operation refused for its size fails `timeout` and says so, even
/// when a stage's deadline is the one armed (it is not the stage's time
/// that ran out).
#[test]
fn a_bulk_operation_too_large_fails_timeout_whatever_deadline_is_armed() {
    // A second of budget: 1,000,000,000 bytes at once at most; this fills
    // 2,000,000,000 (refused before its bounds are checked).
    let wasm = attacks::module(
        "(memory.fill (i32.const 0) (i32.const 1) (i32.const 2000000000))",
        "",
    );
    let module = LoadedModule::compile(
        &spec(
            "fills",
            ModuleSettings::default().execution_timeout_ms(1000),
        ),
        &wasm,
        &settings(),
    )
    .unwrap();
    let mut local = LocalPool::new();
    let message = Message::new("t", vec![b'a'; 200]);
    let soon = Instant::now() + Duration::from_millis(500);
    let report = local
        .call(
            &module,
            CallRequest::new(&message).deadline(soon, ErrorKind::StageTimeout),
        )
        .unwrap();
    let err = report.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        err.message()
            .contains("tried a bulk operation larger than its time budget of 1000 ms allows (1000000000 bytes at once)"),
        "{err}"
    );
}

/// A request carrying the caller's clock is timed from it (the runner reads
/// the clock once, as the call ends); the report's end is a real reading,
/// which the next request of a chain can carry.
#[test]
fn a_call_is_timed_from_the_requests_clock() {
    let module = compile("clocked", "identity", ModuleSettings::default());
    let mut local = LocalPool::new();
    let message = Message::new("t", "");
    call(&mut local, &module, &message);
    let before = Instant::now();
    let report = call(&mut local, &module, &message);
    assert!(report.ended >= before && report.ended <= Instant::now());
    assert!(report.ran <= report.ended - before);

    let clock = Instant::now() - Duration::from_millis(20);
    let report = local
        .call(&module, CallRequest::new(&message).clock(clock))
        .unwrap();
    assert_eq!(report.result, Ok(Outcome::Unchanged));
    assert_eq!(report.ran, report.ended - clock);
    assert!(report.ran >= Duration::from_millis(20), "{:?}", report.ran);
    let next = local
        .call(&module, CallRequest::new(&message).clock(report.ended))
        .unwrap();
    assert!(next.ended >= report.ended);
    assert!(next.ran < Duration::from_millis(20), "{:?}", next.ran);
}

/// A module declared to run on more threads than its
/// `max_concurrent_instances` is counted: a second thread's call while the
/// first runs is put off (`Busy`), not run. Declared within its limit, it is
/// not counted, and the second call runs.
#[test]
fn a_module_run_by_more_threads_than_its_limit_is_counted() {
    let limited = ModuleSettings::default()
        .max_concurrent_instances(1)
        .execution_timeout_ms(300);
    for (threads, counted) in [(2, true), (1, false)] {
        let module =
            compile("limited", "hostile-infinite-loop", limited.clone()).run_by_threads(threads);
        let message = Message::new("t", "");
        let first = {
            let (module, message) = (module.clone(), message.clone());
            std::thread::spawn(move || call(&mut LocalPool::new(), &module, &message))
        };
        std::thread::sleep(Duration::from_millis(50));
        let second = LocalPool::new().call(&module, CallRequest::new(&message));
        assert_eq!(second.is_err(), counted, "{threads} threads: {second:?}");
        if let Ok(report) = second {
            assert_eq!(report.result.map_err(|e| e.kind()), Err(ErrorKind::Timeout));
        }
        let first = first.join().unwrap();
        assert_eq!(first.result.map_err(|e| e.kind()), Err(ErrorKind::Timeout));
    }
}

#[test]
fn warm_up_creates_instances_before_the_first_call() {
    let pool = pool(2);
    let warm = ModuleSettings::default().warmup_instances(2);
    let module = pool.load(&spec("w", warm), &wasm("identity")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while module.stats().idle < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = module.stats();
    assert_eq!((stats.creations, stats.idle), (2, 2), "{stats:?}");
    pool.call_blocking(&module, &Message::new("t", "")).unwrap();
    assert_eq!(module.stats().hits, 1);
}

#[test]
fn idle_instances_and_unused_versions_are_evicted_by_the_background_cleaner() {
    let pool = Pool::new(PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        cleaner_interval: Duration::from_millis(20),
        ..PoolConfig::default()
    })
    .unwrap();
    let short = ModuleSettings::default()
        .idle_ttl(Duration::from_millis(50))
        .warmup_instances(0);
    let module = pool.load(&spec("e", short), &wasm("identity")).unwrap();
    pool.call_blocking(&module, &Message::new("t", "")).unwrap();
    assert_eq!(module.stats().idle, 1);
    let wait_for = |done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(&|| module.stats().idle == 0);
    let stats = module.stats();
    assert_eq!((stats.idle, stats.evictions), (0, 1), "{stats:?}");
    // The module still serves, on a new instance.
    pool.call_blocking(&module, &Message::new("t", "")).unwrap();
    assert_eq!(module.stats().misses, 2);

    // A version nobody holds any more loses its instances on the next beat.
    let long = pool
        .load(&ModuleSpec::new("gone"), &wasm("identity"))
        .unwrap();
    pool.call_blocking(&long, &Message::new("t", "")).unwrap();
    let statistics = long.statistics();
    let stats_of_gone = || statistics.snapshot();
    drop(long);
    wait_for(&|| stats_of_gone().idle == 0);
    assert_eq!(stats_of_gone().evictions, 1, "{:?}", stats_of_gone());
}

#[test]
fn instances_are_recycled_after_their_call_budget_and_reused_until_then() {
    let recycled = ModuleSettings::default().recycle_after_calls(3);
    let module = compile("r", "identity", recycled);
    let mut local = LocalPool::new();
    for _ in 0..7 {
        call(&mut local, &module, &Message::new("t", ""));
    }
    let stats = module.stats();
    // Instances served calls 1-3, 4-6 and 7: three creations, two recycled.
    assert_eq!(
        (stats.creations, stats.evictions, stats.hits),
        (3, 2, 4),
        "{stats:?}"
    );

    let uncached = ModuleSettings::default().enable_caching(false);
    let module = compile("u", "identity", uncached);
    for _ in 0..3 {
        call(&mut local, &module, &Message::new("t", ""));
    }
    assert_eq!(
        module.stats().creations,
        3,
        "without caching every call gets a fresh instance"
    );
    assert_eq!(local.idle_len(&module), 0);
}

#[test]
fn a_memory_limit_below_what_the_module_needs_to_start_is_refused() {
    let pool = pool(1);
    let tiny = ModuleSettings::default().memory_limit_bytes(64 << 10);
    let err = pool
        .load(&spec("tiny", tiny), &wasm("message-validator"))
        .unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn statistics_add_up_across_threads() {
    let module = compile("m", "identity", ModuleSettings::default());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut local = LocalPool::new();
                for _ in 0..5 {
                    call(&mut local, &module, &Message::new("t", ""));
                }
            });
        }
    });
    let stats = module.stats();
    // Each thread made one instance and reused it four times; both threads'
    // pools are gone, and their instances with them.
    assert_eq!(
        (stats.calls, stats.misses, stats.hits, stats.creations),
        (10, 2, 8, 2),
        "{stats:?}"
    );
    assert_eq!((stats.idle, stats.evictions), (0, 2), "{stats:?}");
}

/// The statistics reach a real `metrics` recorder (Prometheus text) whenever
/// they are published, whatever recorder was installed when the module was
/// compiled or called.
#[test]
fn statistics_reach_the_metrics_facade_installed_later() {
    let module = compile("metered", "identity", ModuleSettings::default());
    let mut local = LocalPool::new();
    for _ in 0..3 {
        call(&mut local, &module, &Message::new("t", ""));
    }
    // Only now a recorder: the publish on the cleaner's beat reaches it.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::with_local_recorder(&recorder, || local.evict_idle());
    let text = prometheus.render();
    for line in [
        r#"rustmq_etl_pool_calls_total{module="metered"} 3"#,
        r#"rustmq_etl_pool_hits_total{module="metered"} 2"#,
        r#"rustmq_etl_pool_misses_total{module="metered"} 1"#,
        r#"rustmq_etl_pool_instances_created_total{module="metered"} 1"#,
        r#"rustmq_etl_pool_instances_idle{module="metered"} 1"#,
        r#"rustmq_etl_pool_instances_in_use{module="metered"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    // Memory: the one instance's linear memory (whole wasm pages), beside
    // the limits it is held to.
    let stats = module.statistics().snapshot();
    assert!(
        stats.memory_bytes > 0 && stats.memory_bytes.is_multiple_of(65_536),
        "{stats:?}"
    );
    assert_eq!(stats.largest_memory_bytes, stats.memory_bytes);
    let defaults = ModuleSettings::default();
    assert!(stats.memory_bytes <= defaults.memory_limit_bytes as u64);
    for line in [
        format!(
            r#"rustmq_etl_pool_memory_bytes{{module="metered"}} {}"#,
            stats.memory_bytes
        ),
        format!(
            r#"rustmq_etl_pool_instance_memory_max_bytes{{module="metered"}} {}"#,
            stats.memory_bytes
        ),
        format!(
            r#"rustmq_etl_pool_instance_memory_limit_bytes{{module="metered"}} {}"#,
            defaults.memory_limit_bytes
        ),
        format!(
            r#"rustmq_etl_pool_instances_limit{{module="metered"}} {}"#,
            defaults.max_concurrent_instances
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    // The thread's pool gone (its instances with it), its memory is too.
    drop(local);
    let stats = module.statistics().snapshot();
    assert_eq!((stats.memory_bytes, stats.largest_memory_bytes), (0, 0));
}

/// Every version of a module occurrence counts under its labels: a swap adds
/// the new version's calls to the old one's, and the counters never go back,
/// while the gauges show the live instances only. Another occurrence of the
/// same `module_id` (other settings) counts under a `settings` label of its own.
#[test]
fn a_swapped_module_keeps_counting_under_its_label() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let lines = |local: &mut LocalPool| {
        metrics::with_local_recorder(&recorder, || local.evict_idle());
        prometheus.render()
    };
    let has = |text: &str, line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    };
    let mut local = LocalPool::new();
    let first = compile("swapped", "identity", ModuleSettings::default());
    for _ in 0..3 {
        call(&mut local, &first, &Message::new("t", ""));
    }
    let text = lines(&mut local);
    has(&text, r#"rustmq_etl_pool_calls_total{module="swapped"} 3"#);
    has(
        &text,
        r#"rustmq_etl_pool_instances_idle{module="swapped"} 1"#,
    );

    // A new version, and another occurrence with other settings, beside it.
    let second = compile("swapped", "identity", ModuleSettings::default());
    let other_settings = ModuleSettings::default().execution_timeout_ms(7);
    let label = other_settings.label().expect("not the defaults");
    let other = compile("swapped", "identity", other_settings);
    call(&mut local, &second, &Message::new("t", ""));
    call(&mut local, &other, &Message::new("t", ""));
    call(&mut local, &other, &Message::new("t", ""));
    let text = lines(&mut local);
    has(&text, r#"rustmq_etl_pool_calls_total{module="swapped"} 4"#);
    has(
        &text,
        r#"rustmq_etl_pool_instances_created_total{module="swapped"} 2"#,
    );
    has(
        &text,
        &format!(r#"rustmq_etl_pool_calls_total{{module="swapped",settings="{label}"}} 2"#),
    );
    has(
        &text,
        &format!(
            r#"rustmq_etl_pool_instances_created_total{{module="swapped",settings="{label}"}} 1"#
        ),
    );

    // The first version retired: its instance evicted, its calls kept.
    drop(first);
    std::thread::sleep(Duration::from_millis(5));
    call(&mut local, &second, &Message::new("t", ""));
    let text = lines(&mut local);
    has(&text, r#"rustmq_etl_pool_calls_total{module="swapped"} 5"#);
    has(
        &text,
        r#"rustmq_etl_pool_instances_created_total{module="swapped"} 2"#,
    );
    has(
        &text,
        r#"rustmq_etl_pool_instances_in_use{module="swapped"} 0"#,
    );
    has(
        &text,
        &format!(r#"rustmq_etl_pool_calls_total{{module="swapped",settings="{label}"}} 2"#),
    );
    // The retired version's instance was evicted (dropped whole), none
    // discarded (no call failed).
    has(
        &text,
        r#"rustmq_etl_pool_instances_evicted_total{module="swapped"} 1"#,
    );
    has(
        &text,
        r#"rustmq_etl_pool_instances_discarded_total{module="swapped"} 0"#,
    );
}

/// An instance whose call trapped is discarded, not evicted: its state is
/// not trusted; one whose module answered with its own error is kept.
#[test]
fn a_trapped_instance_is_discarded_and_one_that_answered_an_error_kept() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let mut local = LocalPool::new();
    let trap = compile(
        "discarded-after-traps",
        "hostile-trap",
        ModuleSettings::default(),
    );
    for _ in 0..3 {
        let report = call(&mut local, &trap, &Message::new("t", "attack"));
        assert_eq!(report.result.unwrap_err().kind(), ErrorKind::Trap);
    }
    let kpa = ModuleSettings::default().custom_config(r#"{"unit": "kPa"}"#);
    let kept = format!(
        r#"module="kept-after-errors",settings="{}""#,
        kpa.label().expect("not the defaults")
    );
    let normalizer = compile("kept-after-errors", "pressure-normalizer", kpa);
    for _ in 0..3 {
        let furlongs = Message::new("t", r#"{"unit":"furlongs","reading":1}"#);
        let report = call(&mut local, &normalizer, &furlongs);
        assert_eq!(report.result.unwrap_err().kind(), ErrorKind::GuestError);
    }
    metrics::with_local_recorder(&recorder, || local.evict_idle());
    let text = prometheus.render();
    for line in [
        format!("rustmq_etl_pool_instances_created_total{{{kept}}} 1"),
        format!("rustmq_etl_pool_instances_discarded_total{{{kept}}} 0"),
        format!("rustmq_etl_pool_instances_idle{{{kept}}} 1"),
        format!(r#"rustmq_etl_pool_failures_total{{{kept},kind="guest_error"}} 3"#),
        r#"rustmq_etl_pool_instances_created_total{module="discarded-after-traps"} 3"#.to_owned(),
        r#"rustmq_etl_pool_instances_discarded_total{module="discarded-after-traps"} 3"#.to_owned(),
        r#"rustmq_etl_pool_instances_evicted_total{module="discarded-after-traps"} 0"#.to_owned(),
        r#"rustmq_etl_pool_failures_total{module="discarded-after-traps",kind="trap"} 3"#
            .to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

/// Log lines past the 32 a call may write (of those the logger takes) are
/// counted, per occurrence: the
/// `module` label, and `settings` for settings other than the defaults; kept
/// with the module's statistics, so that a recorder installed after the calls
/// still gets them.
#[test]
fn log_lines_past_the_limit_are_counted_per_occurrence() {
    // Lines count only if a logger takes them: one that takes every line
    // (and keeps none).
    struct Taker;
    impl log::Log for Taker {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, _: &log::Record) {}
        fn flush(&self) {}
    }
    static TAKER: Taker = Taker;
    if log::set_logger(&TAKER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    // Logs 40 lines a call (of a message over 100 bytes).
    let chatty = attacks::module(
        "(global.set $n (i32.const 0))
         (loop $again
           (call $log (i32.const 0) (i32.const 32) (i32.const 7))
           (global.set $n (i32.add (global.get $n) (i32.const 1)))
           (br_if $again (i32.lt_u (global.get $n) (i32.const 40))))",
        "(global $n (mut i32) (i32.const 0))",
    );
    let other = ModuleSettings::default().custom_config(r#"{"verbose":true}"#);
    let label = other.label().expect("not the defaults");
    let plain = LoadedModule::compile(
        &spec("chatty", ModuleSettings::default()),
        &chatty,
        &settings(),
    )
    .unwrap();
    let configured = LoadedModule::compile(&spec("chatty", other), &chatty, &settings()).unwrap();
    let mut local = LocalPool::new();
    for module in [&plain, &configured, &configured] {
        let report = call(&mut local, module, &Message::new("t", vec![b'a'; 200]));
        assert_eq!(report.result, Ok(Outcome::Unchanged));
    }
    assert_eq!(
        (
            plain.stats().log_lines_dropped,
            configured.stats().log_lines_dropped
        ),
        (8, 16)
    );
    // The recorder comes after the calls.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        plain.publish_metrics();
        configured.publish_metrics();
    });
    let text = prometheus.render();
    for line in [
        r#"rustmq_etl_guest_log_lines_dropped_total{module="chatty"} 8"#.to_owned(),
        format!(
            r#"rustmq_etl_guest_log_lines_dropped_total{{module="chatty",settings="{label}"}} 16"#
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

/// A pool gives callers' threads runners of their own only as configured
/// (`caller_threads`), says why when it gives none, and takes a place back
/// when its runner is dropped. Guest code runs on the caller's thread within
/// its module's budget: the watchdog stops it there too.
#[test]
fn caller_runners_are_bounded_and_their_calls_kept_to_their_budget() {
    let none = pool(1);
    let refused = none.caller_runner().err().expect("none by default");
    assert!(refused.to_string().contains("caller_threads"), "{refused}");
    let pool = one_worker_one_caller(PoolConfig::default().cleaner_interval);
    let mut runner = pool.caller_runner().unwrap();
    let taken = pool.caller_runner().err().expect("one at most");
    assert!(taken.to_string().contains("all held"), "{taken}");
    let looping = ModuleSettings::default().execution_timeout_ms(50);
    let module = pool
        .load(&spec("loop", looping), &wasm("hostile-infinite-loop"))
        .unwrap();
    let report = call(&mut runner, &module, &Message::new("t", ""));
    assert_eq!(report.result.map_err(|e| e.kind()), Err(ErrorKind::Timeout));
    assert_eq!(pool.caller_runners(), 1);
    // And in the metrics, beside the limit.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::with_local_recorder(&recorder, || pool.publish_metrics());
    let text = prometheus.render();
    for line in [
        "rustmq_etl_pool_caller_runners 1",
        "rustmq_etl_pool_caller_runners_limit 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:
{text}"
        );
    }
    drop(runner);
    assert_eq!(pool.caller_runners(), 0);
    assert!(pool.caller_runner().is_ok(), "its place was given back");
}

/// A module loaded by a pool with caller threads is counted across its
/// workers and those threads: a caller's call while a worker runs the
/// module's one instance allowed is put off (`Busy`), not run beside it.
#[test]
fn a_caller_thread_shares_its_modules_instance_limit_with_the_workers() {
    let pool = one_worker_one_caller(PoolConfig::default().cleaner_interval);
    let limited = ModuleSettings::default()
        .max_concurrent_instances(1)
        .execution_timeout_ms(300);
    let module = pool
        .load(&spec("limited", limited), &wasm("hostile-infinite-loop"))
        .unwrap();
    let message = Message::new("t", "");
    std::thread::scope(|scope| {
        let on_worker = scope.spawn(|| pool.call_blocking(&module, &message));
        let started = Instant::now();
        while module.stats().in_use == 0 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut runner = pool.caller_runner().unwrap();
        let here = runner.call(&module, CallRequest::new(&message));
        assert!(here.is_err(), "{here:?}");
        assert_eq!(
            on_worker.join().unwrap().map_err(|e| e.kind()),
            Err(ErrorKind::Timeout)
        );
    });
}

/// A caller's runner drops its idle instances past their time-to-live when
/// its holder tidies it (it has no cleaner thread), as a worker does between
/// jobs; a call does not.
#[test]
fn a_caller_runner_drops_idle_instances_when_tidied() {
    let pool = one_worker_one_caller(Duration::from_millis(10));
    let short = ModuleSettings::default()
        .idle_ttl(Duration::from_millis(30))
        .warmup_instances(0);
    let module = pool.load(&spec("e", short), &wasm("identity")).unwrap();
    let mut runner = pool.caller_runner().unwrap();
    let message = Message::new("t", "");
    call(&mut runner, &module, &message);
    assert_eq!(runner.idle_len(&module), 1);
    std::thread::sleep(Duration::from_millis(100));
    // A call does not tidy: its time is the message's.
    call(&mut runner, &module, &message);
    assert_eq!(module.stats().evictions, 0);
    std::thread::sleep(Duration::from_millis(100));
    ModuleRunner::tidy(&mut runner);
    let stats = module.stats();
    assert_eq!(
        (stats.evictions, stats.creations, runner.idle_len(&module)),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// A caller's runner readied for a module (`ModuleRunner::prepare`) has a
/// warm instance of it if the module asks for warm-up instances, as each
/// worker the pool warms has; none for a module that does not.
#[test]
fn a_caller_runner_readied_for_a_module_has_its_warm_instance() {
    let pool = one_worker_one_caller(PoolConfig::default().cleaner_interval);
    let warm = ModuleSettings::default().warmup_instances(1);
    let cold = ModuleSettings::default().warmup_instances(0);
    let warm = pool.load(&spec("warm", warm), &wasm("identity")).unwrap();
    let cold = pool.load(&spec("cold", cold), &wasm("identity")).unwrap();
    let mut runner = pool.caller_runner().unwrap();
    ModuleRunner::prepare(&mut runner, &warm);
    ModuleRunner::prepare(&mut runner, &cold);
    assert_eq!((runner.idle_len(&warm), runner.idle_len(&cold)), (1, 0));
    // Its first call is a hit.
    let hits = warm.stats().hits;
    call(&mut runner, &warm, &Message::new("t", ""));
    assert_eq!(warm.stats().hits, hits + 1);
}
