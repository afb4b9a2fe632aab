//! Loading, hot swap, the artifact cache, back-pressure, warm-up, recycling and
//! idle eviction, with real modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq_etl_core::{Message, ModuleRunner, Transformed};
use rustmq_etl_pool::{
    CompileLimits, CompileSettings, ErrorKind, LoadError, LoadedModule, LocalPool, ModuleConfig,
    Pool, PoolConfig,
};

fn wasm(name: &str) -> Vec<u8> {
    let path: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/modules/{name}.wasm"));
    std::fs::read(path).unwrap()
}

/// The settings of a `LocalPool` of these tests: the fixed rate below.
fn settings() -> CompileSettings {
    CompileSettings {
        limits: CompileLimits::default(),
        bulk_bytes_per_ms: RATE,
        cache: None,
    }
}

/// A module compiled for a `LocalPool`.
fn compile(id: &str, name: &str, config: ModuleConfig) -> LoadedModule {
    LoadedModule::compile(id, &wasm(name), config, &settings()).unwrap()
}

/// A fixed bulk rate keeps these tests from calibrating again and again.
const RATE: u64 = 1_000_000;

fn pool(workers: usize) -> Pool {
    Pool::new(PoolConfig {
        workers,
        bulk_bytes_per_ms: Some(RATE),
        ..PoolConfig::default()
    })
    .unwrap()
}

#[test]
fn hot_swap_serves_the_new_version_and_rejects_a_broken_one() {
    let pool = Arc::new(pool(2));
    pool.load("m", &wasm("identity"), ModuleConfig::default())
        .unwrap();
    let message = Message::new("t", "hello");
    assert_eq!(
        pool.call_blocking("m", &message),
        Ok(Transformed::Unchanged)
    );

    // Calls keep flowing on other threads while the module is replaced.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let message = Message::new("t", "hello");
                (0..200)
                    .map(|_| pool.call_blocking("m", &message))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let report = pool
        .load("m", &wasm("legacy-uppercase"), ModuleConfig::default())
        .unwrap();
    assert!(report.replaced);
    for caller in callers {
        for result in caller.join().unwrap() {
            // Every call finished, on the old version or the new one.
            match result {
                Ok(Transformed::Unchanged) => {}
                Ok(Transformed::Replaced(m)) => assert_eq!(&m.payload[..], b"HELLO"),
                other => panic!("a call in flight during the swap failed: {other:?}"),
            }
        }
    }
    let upper = pool.call_blocking("m", &message).unwrap();
    assert!(matches!(upper, Transformed::Replaced(ref m) if &m.payload[..] == b"HELLO"));

    // A version that does not compile, or whose init refuses its configuration,
    // is rejected and the one loaded keeps serving.
    let err = pool
        .load("m", b"not wasm", ModuleConfig::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }));
    let bad_config = ModuleConfig {
        custom_config: "{\"unit\": \"parsecs\"}".into(),
        ..ModuleConfig::default()
    };
    let err = pool
        .load("m", &wasm("pressure-normalizer"), bad_config)
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown target unit \"parsecs\""),
        "{err}"
    );
    assert_eq!(pool.call_blocking("m", &message), Ok(upper));
}

#[test]
fn the_artifact_cache_skips_compilation_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        artifact_cache: Some(dir.path().to_owned()),
        ..PoolConfig::default()
    };
    let bytes = wasm("message-formatter");
    {
        let pool = Pool::new(config.clone()).unwrap();
        assert!(
            !pool
                .load("f", &bytes, ModuleConfig::default())
                .unwrap()
                .from_cache
        );
    }
    let pool = Pool::new(config.clone()).unwrap();
    assert!(
        pool.load("f", &bytes, ModuleConfig::default())
            .unwrap()
            .from_cache,
        "a restart reuses the artifact"
    );
    let out = pool
        .call_blocking("f", &Message::new("t", "{ \"a\" : 1 }"))
        .unwrap();
    assert!(matches!(out, Transformed::Replaced(ref m) if &m.payload[..] == b"{\"a\":1}"));

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
    assert!(
        !pool
            .load("f", &bytes, ModuleConfig::default())
            .unwrap()
            .from_cache
    );
    assert!(
        pool.load("f", &bytes, ModuleConfig::default())
            .unwrap()
            .from_cache
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_beyond_max_concurrent_instances_wait_instead_of_failing() {
    let pool = Arc::new(pool(4));
    let config = ModuleConfig {
        max_concurrent_instances: 1,
        ..ModuleConfig::default()
    };
    pool.load("slow", &wasm("hostile-slow"), config).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run("slow", &Message::new("t", "1")).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Transformed::Replaced(_))));
    }
    let stats = pool.stats("slow").unwrap();
    assert_eq!(stats.calls, 8);
    assert_eq!(stats.creations, 1, "one instance at most: {stats:?}");
}

#[test]
fn warm_up_creates_instances_before_the_first_call() {
    let pool = pool(2);
    let config = ModuleConfig {
        warmup_instances: 2,
        ..ModuleConfig::default()
    };
    pool.load("w", &wasm("identity"), config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats("w").unwrap().idle < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = pool.stats("w").unwrap();
    assert_eq!((stats.creations, stats.idle), (2, 2), "{stats:?}");
    pool.call_blocking("w", &Message::new("t", "")).unwrap();
    assert_eq!(pool.stats("w").unwrap().hits, 1);
    assert!(pool.unload("w"));
    assert!(!pool.unload("w"));
    let err = pool.call_blocking("w", &Message::new("t", "")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn idle_instances_are_evicted_by_the_background_cleaner() {
    let pool = Pool::new(PoolConfig {
        workers: 1,
        bulk_bytes_per_ms: Some(RATE),
        cleaner_interval: Duration::from_millis(20),
        ..PoolConfig::default()
    })
    .unwrap();
    let config = ModuleConfig {
        idle_ttl: Duration::from_millis(50),
        warmup_instances: 0,
        ..ModuleConfig::default()
    };
    pool.load("e", &wasm("identity"), config).unwrap();
    pool.call_blocking("e", &Message::new("t", "")).unwrap();
    assert_eq!(pool.stats("e").unwrap().idle, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats("e").unwrap().idle > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = pool.stats("e").unwrap();
    assert_eq!((stats.idle, stats.evictions), (0, 1), "{stats:?}");
    // The module still serves, on a new instance.
    pool.call_blocking("e", &Message::new("t", "")).unwrap();
    assert_eq!(pool.stats("e").unwrap().misses, 2);
}

#[test]
fn instances_are_recycled_after_their_call_budget_and_reused_until_then() {
    let config = ModuleConfig {
        recycle_after_calls: 3,
        ..ModuleConfig::default()
    };
    let module = compile("r", "identity", config);
    let mut local = LocalPool::new();
    for _ in 0..7 {
        local.call(&module, &Message::new("t", "")).unwrap();
    }
    let stats = module.stats();
    // Instances served calls 1-3, 4-6 and 7: three creations, two recycled.
    assert_eq!(
        (stats.creations, stats.evictions, stats.hits),
        (3, 2, 4),
        "{stats:?}"
    );

    let uncached = ModuleConfig {
        enable_caching: false,
        ..ModuleConfig::default()
    };
    let module = compile("u", "identity", uncached);
    for _ in 0..3 {
        local.call(&module, &Message::new("t", "")).unwrap();
    }
    assert_eq!(
        module.stats().creations,
        3,
        "without caching every call gets a fresh instance"
    );
    assert_eq!(local.idle_len("u"), 0);
}

#[test]
fn a_memory_limit_below_what_the_module_needs_to_start_is_refused() {
    let pool = pool(1);
    let config = ModuleConfig {
        memory_limit_bytes: 64 << 10,
        ..ModuleConfig::default()
    };
    let err = pool
        .load("tiny", &wasm("message-validator"), config)
        .unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
    let err = pool
        .call_blocking("tiny", &Message::new("t", ""))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn a_thread_keeps_instances_of_the_newest_version_only() {
    let old = compile("s", "identity", ModuleConfig::default());
    let new = compile("s", "temperature-converter", ModuleConfig::default());
    let mut local = LocalPool::new();
    local.call(&old, &Message::new("t", "")).unwrap();
    assert_eq!(local.idle_len("s"), 1);
    // The new version's first call drops the old version's instances.
    local.call(&new, &Message::new("t", "")).unwrap();
    assert_eq!(local.idle_len("s"), 1);
    assert_eq!(old.stats().evictions, 1);
    // A call for the old version dispatched before the swap still runs, on an
    // instance that is not kept; the new version's instance stays.
    local.call(&old, &Message::new("t", "")).unwrap();
    assert_eq!(local.idle_len("s"), 1);
    assert_eq!((old.stats().creations, old.stats().evictions), (2, 2));
    local.call(&new, &Message::new("t", "")).unwrap();
    let stats = new.stats();
    assert_eq!(
        (stats.creations, stats.hits, stats.idle),
        (1, 1, 1),
        "{stats:?}"
    );
    local.forget("s");
    assert_eq!(local.idle_len("s"), 0);
    assert_eq!(new.stats().idle, 0);
}

#[test]
fn statistics_add_up_across_threads() {
    let module = compile("m", "identity", ModuleConfig::default());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut local = LocalPool::new();
                for _ in 0..5 {
                    local.call(&module, &Message::new("t", "")).unwrap();
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

/// The statistics reach a real `metrics` recorder (Prometheus text): counters as
/// calls happen, instance gauges when the cleaner publishes them.
#[test]
fn statistics_reach_the_metrics_facade() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    // Handles are registered when the module is compiled: under this recorder.
    let module = metrics::with_local_recorder(&recorder, || {
        compile("metered", "identity", ModuleConfig::default())
    });
    let mut local = LocalPool::new();
    for _ in 0..3 {
        local.call(&module, &Message::new("t", "")).unwrap();
    }
    local.evict_idle();
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
}
