//! `rustmq-etl validate`.

use std::path::Path;
use std::process::ExitCode;

use crate::{load_plan, plural};

pub(crate) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let Some((config, plan, warnings)) = load_plan(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let pipelines = plan.pipelines();
    let enabled = pipelines.iter().filter(|p| p.config.enabled).count();
    let stages: usize = pipelines.iter().map(|p| p.stages.len()).sum();
    let modules: usize = pipelines
        .iter()
        .flat_map(|p| &p.stages)
        .map(|s| s.modules.len())
        .sum();
    println!(
        "{}: valid: {} pipeline{} ({enabled} enabled), {stages} stage{}, {modules} module{} in {} file{}; {warnings} warning{}",
        path.display(),
        pipelines.len(),
        plural(pipelines.len()),
        plural(stages),
        plural(modules),
        config.file_count(),
        plural(config.file_count()),
        plural(warnings),
    );
    Ok(ExitCode::SUCCESS)
}
