//! One immutable version of everything a message runs on: the plan and the
//! modules loaded for it, swapped whole.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rustmq_etl_config::Config;
use rustmq_etl_core::{Engine, LoadError, LoadStep, ModuleSpec};

use crate::breaker::Breaker;
use crate::options::Options;
use crate::plan::Plan;
use crate::stats::{Stats, Table};

/// Where module bytes come from: `module_id` → the module file's bytes.
pub trait ModuleSource: Send + Sync {
    /// The bytes of module `module_id`, or why they cannot be read.
    fn read(&self, module_id: &str) -> Result<Vec<u8>, String>;
}

/// Modules as files `<dir>/<module_id>.wasm`.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    dir: std::path::PathBuf,
}

impl DirectorySource {
    /// Modules in `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        DirectorySource { dir: dir.into() }
    }
}

impl ModuleSource for DirectorySource {
    fn read(&self, module_id: &str) -> Result<Vec<u8>, String> {
        if module_id.contains(['/', '\\']) || module_id.starts_with('.') {
            return Err(format!(
                "module id {module_id:?} cannot name a file (no path separators or leading dots)"
            ));
        }
        let path = self.dir.join(format!("{module_id}.wasm"));
        std::fs::read(&path).map_err(|e| {
            // Cargo names a build after its crate with `_` for `-`: the
            // likeliest file misnamed.
            let built = self
                .dir
                .join(format!("{}.wasm", module_id.replace('-', "_")));
            let hint = if e.kind() == std::io::ErrorKind::NotFound
                && module_id.contains('-')
                && built.is_file()
            {
                format!(
                    " ({} is there: Cargo names a build after its crate with `_` for `-`; a \
                     module is <module_id>.wasm, so copy it as {module_id}.wasm)",
                    built.display()
                )
            } else {
                String::new()
            };
            format!("cannot read {}: {e}{hint}", path.display())
        })
    }
}

impl<F: Fn(&str) -> Result<Vec<u8>, String> + Send + Sync> ModuleSource for F {
    fn read(&self, module_id: &str) -> Result<Vec<u8>, String> {
        self(module_id)
    }
}

/// A loaded module and the bytes it was loaded from (a reload with the same
/// occurrence and the same bytes keeps it instead of compiling again).
#[derive(Clone)]
pub(crate) struct Loaded<M> {
    pub(crate) module: M,
    pub(crate) wasm: Arc<[u8]>,
}

pub(crate) struct Snapshot<E: Engine> {
    /// Unique in the process (per-thread caches are keyed by it); the
    /// version is only unique per orchestrator.
    pub(crate) id: u64,
    pub(crate) version: u64,
    pub(crate) config: Config,
    pub(crate) plan: Plan,
    /// By occurrence: the loaded module, or why its calls fail
    /// `unavailable` (it could not be loaded: read, compiled or started).
    pub(crate) modules: Vec<Result<Loaded<E::Module>, Arc<str>>>,
    /// The occurrences that could not be loaded, each with the error that
    /// says where it is listed, in the plan's order of occurrences.
    pub(crate) unavailable: Vec<(usize, LoadError)>,
    /// By occurrence.
    pub(crate) breakers: Vec<Arc<Breaker>>,
    pub(crate) options: Arc<Options>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) table: Table,
    /// Where each pipeline's stages start among all stages.
    stage_offsets: Vec<usize>,
}

impl<E: Engine> Snapshot<E> {
    /// The stage's index among every pipeline's stages (its histogram).
    pub(crate) fn stage_series(&self, pipeline: usize, stage: usize) -> usize {
        self.stage_offsets[pipeline] + stage
    }

    /// The specs of the unavailable occurrences, in order.
    pub(crate) fn unavailable_occurrences(&self) -> impl Iterator<Item = &ModuleSpec> {
        self.unavailable
            .iter()
            .map(|(occurrence, _)| &self.plan.occurrences()[*occurrence])
    }

    /// What stands for `spec` if it is an unavailable occurrence here, and
    /// why it is.
    fn unavailable_entry(&self, spec: &ModuleSpec) -> Option<(Arc<str>, LoadError)> {
        self.unavailable
            .iter()
            .find(|(occurrence, _)| self.plan.occurrences()[*occurrence] == *spec)
            .and_then(|(occurrence, error)| {
                let reason = self.modules[*occurrence].as_ref().err()?;
                Some((reason.clone(), error.clone()))
            })
    }

    /// The breaker of `spec` if it is an unavailable occurrence here.
    fn unavailable_breaker(&self, spec: &ModuleSpec) -> Option<Arc<Breaker>> {
        self.unavailable
            .iter()
            .find(|(occurrence, _)| self.plan.occurrences()[*occurrence] == *spec)
            .map(|(occurrence, _)| self.breakers[*occurrence].clone())
    }

    /// Why each unavailable occurrence is, where it is listed.
    pub(crate) fn unavailable_errors(&self) -> Vec<LoadError> {
        self.unavailable.iter().map(|(_, e)| e.clone()).collect()
    }
}

/// Everything that outlives one snapshot.
pub(crate) struct Keep<E: Engine> {
    pub(crate) engine: Arc<E>,
    pub(crate) source: Box<dyn ModuleSource>,
    pub(crate) options: Arc<Options>,
    pub(crate) stats: Arc<Stats>,
    /// A breaker per occurrence, kept across reloads.
    pub(crate) breakers: Mutex<HashMap<ModuleSpec, Arc<Breaker>>>,
    /// The occurrences whose `rustmq_etl_circuit_state` was last published.
    pub(crate) circuit_gauges: Mutex<HashSet<ModuleSpec>>,
}

/// Whether a new snapshot reads its modules' files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Modules {
    /// Every occurrence's file is read; those whose bytes did not change
    /// keep their loaded module (a reload).
    Read,
    /// An occurrence the previous snapshot has, loaded or unavailable, stays
    /// as it is there, its file not read (a pipeline switched on or off: the
    /// switch changes nothing else, and needs nothing from the disk); only
    /// an occurrence it lacks is read.
    Kept,
}

/// Builds the snapshot of `config`: plans it, reads and loads every module
/// occurrence (keeping those of `previous` whose bytes did not change), and
/// collects every failure to read, compile or start one. Such a failure
/// stops nothing when there is no `previous` version (nothing else could
/// serve) or the occurrence was unavailable there too: the occurrence is
/// unavailable (execution.md: a module "not loaded, not found"), each call
/// of it fails `unavailable`, and the snapshot lists it with its error. A
/// reload never takes a module out of service, nor puts a new one in, that
/// does not load: that is a failure, and the version in service keeps
/// serving.
pub(crate) fn build<E: Engine>(
    keep: &Keep<E>,
    config: &Config,
    version: u64,
    previous: Option<&Snapshot<E>>,
    read: Modules,
) -> Result<(Snapshot<E>, usize), Vec<LoadError>> {
    let plan = Plan::build(config).map_err(|e| vec![LoadError::configuration(e.to_string())])?;
    let mut reused_by_spec: HashMap<&ModuleSpec, &Loaded<E::Module>> = HashMap::new();
    if let Some(previous) = previous {
        for (spec, module) in previous.plan.occurrences().iter().zip(&previous.modules) {
            if let Ok(loaded) = module {
                reused_by_spec.insert(spec, loaded);
            }
        }
    }
    let mut modules = Vec::new();
    let mut failed = Vec::new();
    let mut unavailable = Vec::new();
    let mut compiled = 0;
    // Each module's file read once, for all its occurrences: one snapshot
    // holds one version of a module, even if its file is replaced while
    // the snapshot is built.
    let mut read_once: HashMap<&str, Result<Arc<[u8]>, String>> = HashMap::new();
    for (occurrence, spec) in plan.occurrences().iter().enumerate() {
        if read == Modules::Kept {
            if let Some(old) = reused_by_spec.get(spec) {
                modules.push(Ok((*old).clone()));
                continue;
            }
            if let Some((reason, error)) = previous.and_then(|p| p.unavailable_entry(spec)) {
                modules.push(Err(reason));
                unavailable.push((occurrence, error));
                continue;
            }
        }
        // An occurrence that does not load: unavailable at start or if it
        // already is, else the reload's failure.
        let mut not_loaded = |error: LoadError| {
            modules.push(Err(Arc::from(format!(
                "the module was not loaded: {}",
                error.message()
            ))));
            if previous.is_none_or(|p| p.unavailable_occurrences().any(|s| s == spec)) {
                unavailable.push((occurrence, with_listing(&plan, occurrence, error)));
            } else {
                let error = LoadError::new(
                    error.step(),
                    error.module(),
                    format!(
                        "{}; a reload does not put a module in service that does not load",
                        error.message()
                    ),
                );
                failed.push((occurrence, with_listing(&plan, occurrence, error)));
            }
        };
        let bytes = read_once
            .entry(spec.id.as_str())
            .or_insert_with(|| keep.source.read(&spec.id).map(Arc::from));
        let wasm = match bytes.clone() {
            Ok(wasm) => wasm,
            Err(e) => {
                not_loaded(LoadError::new(LoadStep::Read, &spec.id, e));
                continue;
            }
        };
        if let Some(old) = reused_by_spec.get(spec).filter(|old| *old.wasm == *wasm) {
            modules.push(Ok((*old).clone()));
            continue;
        }
        match keep.engine.load(spec, &wasm) {
            Ok(module) => {
                compiled += 1;
                modules.push(Ok(Loaded { module, wasm }));
            }
            Err(e) => not_loaded(e),
        }
    }
    if !failed.is_empty() {
        // What stops a reload; those already unavailable in service are no
        // cause.
        return Err(failed.into_iter().map(|(_, e)| e).collect());
    }
    // An unavailable occurrence's breaker is kept by the snapshots while it
    // stays unavailable, never among the breakers kept across reloads: the
    // module, once found, starts with a closed breaker (the failures of its
    // absence say nothing of it). A module swapped for new bytes keeps its
    // breaker (docs/execution.md).
    let breakers = {
        let mut all = keep.breakers.lock().unwrap_or_else(|p| p.into_inner());
        plan.occurrences()
            .iter()
            .zip(&modules)
            .map(|(spec, module)| {
                let closed = || Arc::new(Breaker::new(keep.options.breaker));
                match module {
                    Ok(_) => all.entry(spec.clone()).or_insert_with(closed).clone(),
                    Err(_) => previous
                        .and_then(|p| p.unavailable_breaker(spec))
                        .unwrap_or_else(closed),
                }
            })
            .collect()
    };
    let mut stage_offsets = Vec::new();
    let mut stages = 0;
    for pipeline in plan.pipelines() {
        stage_offsets.push(stages);
        stages += pipeline.stages.len();
    }
    let table = keep.stats.table(&plan);
    static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Ok((
        Snapshot {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            version,
            config: config.clone(),
            modules,
            unavailable,
            breakers,
            options: keep.options.clone(),
            stats: keep.stats.clone(),
            table,
            stage_offsets,
            plan,
        },
        compiled,
    ))
}

/// `error` of `occurrence`, saying where the configuration lists it
/// (and, for settings other than the defaults, their metric label): two
/// occurrences of one module with other `custom_config`s are then told
/// apart.
fn with_listing(plan: &Plan, occurrence: usize, error: LoadError) -> LoadError {
    let listings: Vec<String> = plan
        .pipelines()
        .iter()
        .flat_map(|pipeline| {
            pipeline
                .stages
                .iter()
                .filter(|stage| stage.modules.iter().any(|m| m.occurrence == occurrence))
                .map(move |stage| {
                    format!(
                        "pipeline {:?}, stage {}",
                        pipeline.config.pipeline_id, stage.priority
                    )
                })
        })
        .collect();
    if listings.is_empty() {
        return error;
    }
    let settings = plan.occurrences()[occurrence]
        .settings
        .label()
        .map_or(String::new(), |label| format!("; settings {label}"));
    LoadError::new(
        error.step(),
        error.module(),
        format!(
            "{} (as listed in {}{settings})",
            error.message(),
            listings.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module not found beside a file Cargo named for it (`_` for `-`)
    /// says so: the likeliest mistake of a module author.
    #[test]
    fn a_module_not_found_beside_its_cargo_named_build_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("price_converter.wasm"), b"").unwrap();
        let source = DirectorySource::new(dir.path());
        let error = source.read("price-converter").unwrap_err();
        assert!(
            error.contains("price_converter.wasm is there")
                && error.contains("copy it as price-converter.wasm"),
            "{error}"
        );
        let error = source.read("other-module").unwrap_err();
        assert!(!error.contains("is there"), "{error}");
    }
}
