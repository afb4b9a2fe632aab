//! Checks that need the whole configuration: every problem is reported, none stops
//! the search for the next.

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Severity};
use crate::load::PipelineSource;
use crate::model::{
    ConditionType, EtlModuleInstance, EtlPipelineConfig, FilterType, ModuleInstanceConfig,
};

/// One hour: longer time budgets are taken for mistakes.
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// A WebAssembly page.
const MIN_MEMORY_BYTES: usize = 64 << 10;
/// The whole 32-bit address space of a wasm32 module.
const MAX_MEMORY_BYTES: usize = 4 << 30;
const MAX_INSTANCES: u32 = 10_000;
const MAX_RETRIES: u32 = 100;

/// Where a problem is, from the file down.
#[derive(Clone, Default)]
struct Place<'a> {
    source: Option<&'a PipelineSource>,
    pipeline: Option<String>,
    stage: Option<u32>,
    module: Option<String>,
}

struct Report<'a> {
    diagnostics: Vec<Diagnostic>,
    place: Place<'a>,
}

impl Report<'_> {
    fn push(&mut self, severity: Severity, field: Option<String>, message: String) {
        let place = &self.place;
        self.diagnostics.push(Diagnostic {
            severity,
            file: place.source.and_then(|s| s.file.clone()),
            line_column: None,
            pipeline: place.pipeline.clone(),
            stage: place.stage,
            module: place.module.clone(),
            field,
            message,
        });
    }

    fn error(&mut self, field: impl Into<Option<String>>, message: impl Into<String>) {
        self.push(Severity::Error, field.into(), message.into());
    }

    fn warning(&mut self, field: impl Into<Option<String>>, message: impl Into<String>) {
        self.push(Severity::Warning, field.into(), message.into());
    }
}

pub(crate) fn validate(pipelines: &[PipelineSource]) -> Vec<Diagnostic> {
    let mut report = Report {
        diagnostics: Vec::new(),
        place: Place::default(),
    };
    // Each pipeline id seen, with where: its source and its place in its file.
    let mut seen: HashMap<&str, (&PipelineSource, usize)> = HashMap::new();
    let mut in_file = 0;
    for (position, source) in pipelines.iter().enumerate() {
        let p = &source.pipeline;
        // Pipelines come file by file: the count starts again with each file.
        in_file = match position
            .checked_sub(1)
            .map(|before| &pipelines[before].file)
        {
            Some(file) if *file == source.file => in_file + 1,
            _ => 1,
        };
        report.place = Place {
            source: Some(source),
            // (Without an id, by its place in its file, which the
            // diagnostic names.)
            pipeline: Some(if p.pipeline_id.is_empty() {
                format!("#{in_file}")
            } else {
                p.pipeline_id.clone()
            }),
            ..Place::default()
        };
        if p.pipeline_id.trim().is_empty() {
            report.error(
                "pipeline_id".to_owned(),
                "a pipeline needs a non-empty `pipeline_id`",
            );
        } else if let Some(&(first, first_in_file)) = seen.get(p.pipeline_id.as_str()) {
            // Both pipelines carry the same id: name them by their places
            // (the first with the id, however many more have it).
            let this = ordinal(in_file);
            let first_place = ordinal(first_in_file);
            let message = match &first.file {
                Some(f) if first.file != source.file => format!(
                    "duplicate pipeline id: the {this} pipeline of this file has the id of the {first_place} pipeline of {}",
                    f.display()
                ),
                _ => format!(
                    "duplicate pipeline id: the {this} pipeline has the id of the {first_place} one"
                ),
            };
            report.error("pipeline_id".to_owned(), message);
        } else {
            seen.insert(&p.pipeline_id, (source, in_file));
        }
        pipeline(&mut report, p);
    }
    report.diagnostics
}

fn pipeline(report: &mut Report<'_>, p: &EtlPipelineConfig) {
    if p.stages.is_empty() {
        report.error("stages".to_owned(), "the pipeline has no stages");
    }
    check_timeout(report, "global_timeout_ms", p.global_timeout_ms);
    if p.max_retries > MAX_RETRIES {
        report.error(
            "max_retries".to_owned(),
            format!(
                "{} retries is more than the limit of {MAX_RETRIES}",
                p.max_retries
            ),
        );
    }
    let mut priorities = HashMap::new();
    let outer = report.place.clone();
    for (index, stage) in p.stages.iter().enumerate() {
        report.place = Place {
            stage: Some(stage.priority),
            ..outer.clone()
        };
        if let Some(first) = priorities.insert(stage.priority, index) {
            report.error(
                "priority".to_owned(),
                format!(
                    "the pipeline's {} and {} stages (in the file's order) share priority {}; \
                     priorities must be unique",
                    ordinal(first + 1),
                    ordinal(index + 1),
                    stage.priority
                ),
            );
        }
        if stage.modules.is_empty() {
            report.error("modules".to_owned(), "the stage has no modules");
        }
        if let Some(t) = stage.stage_timeout_ms {
            check_timeout(report, "stage_timeout_ms", t);
            if t > p.global_timeout_ms {
                report.warning(
                    "stage_timeout_ms".to_owned(),
                    format!(
                        "the stage timeout ({t} ms) exceeds the pipeline's global timeout ({} ms), which ends the stage first",
                        p.global_timeout_ms
                    ),
                );
            }
        }
        let mut ids = HashMap::new();
        let stage_place = report.place.clone();
        for (m, module_config) in stage.modules.iter().enumerate() {
            report.place = Place {
                module: Some(if module_config.module_id.is_empty() {
                    format!("#{}", m + 1)
                } else {
                    module_config.module_id.clone()
                }),
                ..stage_place.clone()
            };
            // The same module with other settings is another occurrence
            // (execution.md); the same module with the same settings twice
            // in one stage runs twice, as one occurrence: a surprise.
            let occurrence = (
                module_config.module_id.as_str(),
                module_config.instance_config.to_settings(),
            );
            let first = *ids.entry(occurrence).or_insert(m);
            if first != m && !module_config.module_id.is_empty() {
                report.warning(
                    "module_id".to_owned(),
                    format!(
                        "the module is listed in this stage already (module #{}) with the same \
                         instance_config: it runs once for each listing, as one occurrence (one \
                         breaker, one set of instances and statistics); give it another \
                         custom_config to make it another occurrence",
                        first + 1
                    ),
                );
            }
            // The tightest bound on a call in this stage, and whose it is.
            let bound = match stage.stage_timeout_ms {
                // (A stage timeout of 0 is an error of its own.)
                Some(t) if t > 0 && t < p.global_timeout_ms => (t, "the stage timeout"),
                _ => (p.global_timeout_ms, "the pipeline's global timeout"),
            };
            module(report, module_config, bound);
        }
    }
    report.place = outer;
}

/// `bound`: the tightest timeout over the module's calls, and whose it is.
fn module(report: &mut Report<'_>, m: &EtlModuleInstance, bound: (u64, &str)) {
    let id = &m.module_id;
    if id.is_empty() {
        report.error(
            "module_id".to_owned(),
            "a module needs a non-empty `module_id`",
        );
    } else if id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        report.error(
            "module_id".to_owned(),
            format!("{id:?} is not a valid module id: use letters, digits, `-`, `_` and `.`, not starting with `.`"),
        );
    }
    instance_config(report, &m.instance_config, bound);
    for (i, f) in m.topic_filters.iter().enumerate() {
        let field = format!("topic_filters[{i}].pattern");
        if let Err(e) = f.to_filter() {
            report.error(field.clone(), e.to_string());
        }
        match f.filter_type {
            FilterType::Exact if f.pattern == "*" => report.warning(
                field,
                "an Exact filter with pattern \"*\" matches only a topic literally named \"*\"; use Wildcard \"*\" (or no filter) to match every topic",
            ),
            FilterType::Exact if f.pattern.contains(['*', '?']) => report.warning(
                field,
                format!("Exact filters match literally, so {:?} is not a wildcard; use the Wildcard type", f.pattern),
            ),
            FilterType::Prefix | FilterType::Suffix | FilterType::Contains if f.pattern.is_empty() => report.warning(
                field,
                if f.negate {
                    "an empty pattern matches every topic, so this negated filter accepts none"
                } else {
                    "an empty pattern matches every topic"
                },
            ),
            _ => {}
        }
    }
    for (i, r) in m.conditional_rules.iter().enumerate() {
        let field = format!("conditional_rules[{i}]");
        match r.to_rule() {
            Err(e) => report.error(field.clone(), e.to_string()),
            Ok(rule) => {
                for w in rule.warnings() {
                    report.warning(field.clone(), format!("`{rule}` {w}"));
                }
            }
        }
        if matches!(
            r.condition_type,
            ConditionType::MessageSize | ConditionType::MessageAge
        ) && !r.field_path.is_empty()
        {
            report.warning(
                format!("{field}.field_path"),
                format!(
                    "{:?} rules ignore `field_path` ({:?})",
                    r.condition_type, r.field_path
                ),
            );
        }
    }
}

fn instance_config(report: &mut Report<'_>, c: &ModuleInstanceConfig, bound: (u64, &str)) {
    let (bound_ms, whose) = bound;
    let field = |name: &str| Some(format!("instance_config.{name}"));
    if c.memory_limit_bytes < MIN_MEMORY_BYTES {
        report.error(
            field("memory_limit_bytes"),
            format!(
                "{} bytes is less than one 64 KiB WebAssembly page ({MIN_MEMORY_BYTES})",
                c.memory_limit_bytes
            ),
        );
    } else if c.memory_limit_bytes > MAX_MEMORY_BYTES {
        report.error(
            field("memory_limit_bytes"),
            format!(
                "{} bytes is more than a wasm32 module can address (4 GiB = {MAX_MEMORY_BYTES})",
                c.memory_limit_bytes
            ),
        );
    }
    if c.execution_timeout_ms == 0 || c.execution_timeout_ms > MAX_TIMEOUT_MS {
        check_timeout_at(
            report,
            field("execution_timeout_ms"),
            c.execution_timeout_ms,
        );
    } else if c.execution_timeout_ms > bound_ms
        // (A bound of 0 is an error of its own.)
        && bound_ms > 0
        // Left at its default, it is no one's choice to warn of: a pipeline
        // whose global timeout is below a second would warn of every module.
        && c.execution_timeout_ms != crate::model::defaults::EXECUTION_TIMEOUT_MS
    {
        report.warning(
            field("execution_timeout_ms"),
            format!(
                "the call timeout ({} ms) exceeds {whose} ({bound_ms} ms), which ends the call first",
                c.execution_timeout_ms
            ),
        );
    }
    if c.max_concurrent_instances == 0 {
        report.error(
            field("max_concurrent_instances"),
            "must be at least 1: the module could never run",
        );
    } else if c.max_concurrent_instances > MAX_INSTANCES {
        report.error(
            field("max_concurrent_instances"),
            format!(
                "{} is more than the limit of {MAX_INSTANCES}",
                c.max_concurrent_instances
            ),
        );
    }
    if c.enable_caching && c.cache_ttl_seconds == 0 {
        report.warning(
            field("cache_ttl_seconds"),
            "caching is enabled with a time-to-live of 0: idle instances are dropped at once",
        );
    }
}

fn check_timeout(report: &mut Report<'_>, name: &str, ms: u64) {
    check_timeout_at(report, Some(name.to_owned()), ms);
}

fn check_timeout_at(report: &mut Report<'_>, field: Option<String>, ms: u64) {
    if ms == 0 {
        report.error(field.clone(), "a timeout of 0 ms lets nothing run");
    } else if ms > MAX_TIMEOUT_MS {
        report.error(
            field,
            format!("{ms} ms is more than the limit of one hour ({MAX_TIMEOUT_MS} ms)"),
        );
    }
}

/// `n` as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordinals() {
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
            .into_iter()
            .map(super::ordinal)
            .collect();
        assert_eq!(
            words,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
    }
}
