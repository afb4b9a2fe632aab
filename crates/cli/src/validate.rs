//! `rustmq-etl validate`.

use std::path::Path;
use std::process::ExitCode;

use crate::{load_modules, load_plan, plural};

pub(crate) fn run(path: &Path, modules_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some((config, plan, warnings)) = load_plan(path) else {
        return Ok(ExitCode::FAILURE);
    };
    // The modules too, if asked: loaded as `run` loads them (each failure
    // listed), then let go.
    if let Some(dir) = modules_dir {
        let settings = crate::Settings {
            options: rustmq_etl_orchestrator::Options::default(),
            // A check leaves nothing behind.
            cache: crate::Cache::Off,
            pin_workers: false,
            caller_threads: 0,
            modules_read: None,
        };
        if load_modules(&config, dir, true, &settings)?.is_none() {
            return Ok(ExitCode::FAILURE);
        }
    }
    let pipelines = plan.pipelines();
    let enabled = pipelines.iter().filter(|p| p.config.enabled).count();
    let stages: usize = pipelines.iter().map(|p| p.stages.len()).sum();
    let modules: usize = pipelines
        .iter()
        .flat_map(|p| &p.stages)
        .map(|s| s.modules.len())
        .sum();
    let loaded = match modules_dir {
        Some(dir) => format!(", every module loaded from {}", dir.display()),
        None => String::new(),
    };
    out!(
        "{}: valid: {} pipeline{} ({enabled} enabled), {stages} stage{}, {modules} module{} in {} file{}; {} warning{}{loaded}",
        path.display(),
        pipelines.len(),
        plural(pipelines.len()),
        plural(stages),
        plural(modules),
        config.file_count(),
        plural(config.file_count()),
        warnings.len(),
        plural(warnings.len()),
    );
    Ok(ExitCode::SUCCESS)
}
