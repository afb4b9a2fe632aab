//! Compiling a module once: ABI detection, import policy, and the on-disk
//! artifact cache.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmer::sys::{Cranelift, EngineBuilder, NativeEngineExt};
use wasmer::{Engine, ExternType, FunctionType, Module, Type};

use crate::error::LoadError;
use crate::fuel::Fuel;
use crate::limits::LimitingTunables;

/// How one module runs: limits, pool sizing and its own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    /// Linear memory cap per instance.
    pub memory_limit_bytes: usize,
    /// Time budget of one call.
    pub execution_timeout_ms: u64,
    /// Most instances of the module at once; callers beyond it wait.
    pub max_concurrent_instances: u32,
    /// Instances created when the module is loaded.
    pub warmup_instances: u32,
    /// Keep idle instances for reuse (`false`: a fresh instance per call).
    pub enable_caching: bool,
    /// How long an idle instance is kept.
    pub idle_ttl: Duration,
    /// Handed to the module's init function (JSON text).
    pub custom_config: String,
    /// The largest answer accepted from the guest.
    pub max_output_bytes: usize,
    /// An instance is replaced after this many calls, so that guest state (and
    /// leaks) cannot grow for ever.
    pub recycle_after_calls: u64,
    /// Most instances created per second, per worker thread.
    pub max_creations_per_second: u32,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig {
            memory_limit_bytes: 64 << 20,
            execution_timeout_ms: 1_000,
            max_concurrent_instances: 10,
            warmup_instances: 1,
            enable_caching: true,
            idle_ttl: Duration::from_secs(300),
            custom_config: "null".to_owned(),
            max_output_bytes: 16 << 20,
            recycle_after_calls: 100_000,
            max_creations_per_second: 1_000,
        }
    }
}

/// Which contract a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `docs/abi.md` version 1: the whole message in, edits out.
    V1,
    /// The earlier single-function form: payload in, payload out.
    Legacy,
}

/// A compiled module version, shared by every worker thread.
pub(crate) struct CompiledModule {
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) abi: Abi,
    pub(crate) config: ModuleConfig,
    /// Metering points per call: the time budget times the calibrated rate.
    pub(crate) fuel: u64,
    pub(crate) from_cache: bool,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

/// An engine for one module: Cranelift with its own fuel middleware (one per
/// module: the middleware remembers the module it instrumented) and the memory cap.
pub(crate) fn engine(memory_limit_bytes: usize) -> Engine {
    let mut compiler = Cranelift::default();
    wasmer::sys::CompilerConfig::push_middleware(&mut compiler, Arc::new(Fuel::default()));
    let mut engine: Engine = EngineBuilder::new(compiler).into();
    engine.set_tunables(LimitingTunables::new(memory_limit_bytes));
    engine
}

/// Bumped whenever the way modules are compiled changes (cost function,
/// middleware, engine settings), so that old artifacts are never loaded.
const COMPILE_SETTINGS: &str = "wasmer-7.4.2/cranelift/fuel-1-per-operator/v3";

/// Compiled artifacts on disk, keyed by the module bytes' hash and the compile
/// settings, each file carrying the hash of its own content.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

const MAGIC: &[u8; 8] = b"RMQETLA1";

impl ArtifactCache {
    /// A cache in `dir` (created if missing). Only this program should write
    /// there: artifacts are native code.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(ArtifactCache { dir })
    }

    fn path(&self, wasm: &[u8]) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(COMPILE_SETTINGS.as_bytes());
        hasher.update(
            wasmer::sys::Target::default()
                .triple()
                .to_string()
                .as_bytes(),
        );
        hasher.update(wasm);
        let key: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{key}.artifact"))
    }

    fn load(&self, wasm: &[u8], engine: &Engine) -> Option<Module> {
        let bytes = fs::read(self.path(wasm)).ok()?;
        let (header, artifact) = bytes.split_at_checked(MAGIC.len() + 32)?;
        if &header[..MAGIC.len()] != MAGIC || header[MAGIC.len()..] != Sha256::digest(artifact)[..]
        {
            log::warn!(
                "artifact cache: {} is damaged; recompiling",
                self.path(wasm).display()
            );
            return None;
        }
        // SAFETY: the artifact was written by `store` below for exactly these
        // module bytes and compile settings (both in the file name), and its
        // content hash matches, so it is the output of `Module::serialize` with
        // an engine configured like this one. The cache directory is trusted.
        unsafe { Module::deserialize(engine, artifact.to_vec()) }.ok()
    }

    fn store(&self, wasm: &[u8], module: &Module) {
        let result = (|| -> Result<(), String> {
            let artifact = module.serialize().map_err(|e| e.to_string())?;
            let path = self.path(wasm);
            let mut tmp = tempfile_in(&self.dir).map_err(|e| e.to_string())?;
            tmp.1.write_all(MAGIC).map_err(|e| e.to_string())?;
            tmp.1
                .write_all(&Sha256::digest(&artifact))
                .map_err(|e| e.to_string())?;
            tmp.1.write_all(&artifact).map_err(|e| e.to_string())?;
            tmp.1.sync_all().map_err(|e| e.to_string())?;
            fs::rename(&tmp.0, &path).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            log::warn!(
                "artifact cache: cannot store an artifact in {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// A new file in `dir` with a unique name.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// Compiles (or loads from the cache) and checks a module's exports and imports.
pub(crate) fn compile(
    id: &str,
    version: u64,
    wasm: &[u8],
    config: ModuleConfig,
    fuel_per_ms: u64,
    cache: Option<&ArtifactCache>,
) -> Result<CompiledModule, LoadError> {
    if config.memory_limit_bytes < wasmer::WASM_PAGE_SIZE || config.execution_timeout_ms == 0 {
        return Err(LoadError::Limits {
            module: id.to_owned(),
            message: "memory_limit_bytes must be at least one 64 KiB page and execution_timeout_ms at least 1"
                .to_owned(),
        });
    }
    let engine = engine(config.memory_limit_bytes);
    let cached = cache.and_then(|c| c.load(wasm, &engine));
    let from_cache = cached.is_some();
    let module = match cached {
        Some(module) => module,
        None => {
            let module = Module::new(&engine, wasm).map_err(|e| LoadError::Compile {
                module: id.to_owned(),
                message: e.to_string(),
            })?;
            if let Some(cache) = cache {
                cache.store(wasm, &module);
            }
            module
        }
    };
    let abi = check_abi(&module).map_err(|message| LoadError::Abi {
        module: id.to_owned(),
        message,
    })?;
    Ok(CompiledModule {
        id: id.to_owned(),
        version,
        engine,
        module,
        abi,
        fuel: config.execution_timeout_ms.saturating_mul(fuel_per_ms),
        config,
        from_cache,
    })
}

fn func(params: &[Type], results: &[Type]) -> FunctionType {
    FunctionType::new(params.to_vec(), results.to_vec())
}

/// The imports a guest may have: `rmq_etl.log` and nothing else.
pub(crate) const LOG_IMPORT: (&str, &str) = ("rmq_etl", "log");

fn check_abi(module: &Module) -> Result<Abi, String> {
    use Type::{I32, I64};
    for import in module.imports() {
        let allowed = (import.module(), import.name()) == LOG_IMPORT
            && matches!(import.ty(), ExternType::Function(f) if *f == func(&[I32, I32, I32], &[]));
        if !allowed {
            return Err(format!(
                "imports `{}.{}` ({:?}); a guest may import only `rmq_etl.log(i32, i32, i32)` — no filesystem, network, clock, randomness or environment",
                import.module(),
                import.name(),
                import.ty()
            ));
        }
    }
    let export = |name: &str| {
        module
            .exports()
            .find(|e| e.name() == name)
            .map(|e| e.ty().clone())
    };
    let has_func = |name: &str, ty: FunctionType| matches!(export(name), Some(ExternType::Function(f)) if f == ty);
    if !matches!(export("memory"), Some(ExternType::Memory(_))) {
        return Err("exports no `memory`".to_owned());
    }
    let v1 = [
        ("rmq_abi_version", func(&[], &[I32])),
        ("rmq_alloc", func(&[I32], &[I32])),
        ("rmq_init", func(&[I32, I32], &[I64])),
        ("rmq_transform", func(&[I32, I32], &[I64])),
    ];
    if v1.iter().all(|(name, ty)| has_func(name, ty.clone())) {
        return Ok(Abi::V1);
    }
    if has_func("allocate", func(&[I32], &[I32]))
        && has_func("transform", func(&[I32, I32], &[I32]))
    {
        return Ok(Abi::Legacy);
    }
    let missing: Vec<String> = v1
        .iter()
        .filter(|(name, ty)| !has_func(name, ty.clone()))
        .map(|(name, ty)| format!("`{name}` {ty}"))
        .collect();
    Err(format!(
        "is not a rustmq-etl module: it lacks {} (see docs/abi.md), and is not a legacy module either (`allocate(i32) -> i32` and `transform(i32, i32) -> i32`)",
        missing.join(", ")
    ))
}
