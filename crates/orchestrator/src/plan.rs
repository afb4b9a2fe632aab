//! The compiled execution plan and module selection.

use std::fmt::Write as _;
use std::sync::Arc;

use rustmq_etl_condition::{ConditionSet, ConditionSetBuilder, GroupId};
use rustmq_etl_config::{Config, EtlPipelineConfig, ModuleInstanceConfig};
use rustmq_etl_core::Message;
use rustmq_etl_filter::{FilterSet, FilterSetBuilder, SlotId};

/// Why a configuration cannot become a plan.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pipeline {pipeline:?}, module {module:?}: {message}")]
pub struct PlanError {
    pipeline: String,
    module: String,
    message: String,
}

/// One module of a stage.
#[derive(Debug, Clone)]
pub struct PlannedModule {
    /// The module's id.
    pub module_id: String,
    /// Its resource limits and configuration.
    pub instance_config: ModuleInstanceConfig,
    slot: SlotId,
    group: GroupId,
}

/// One stage: modules of one priority.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Lower runs first.
    pub priority: u32,
    /// Whether the modules run concurrently on the stage's input.
    pub parallel_execution: bool,
    /// The modules in declaration order.
    pub modules: Vec<PlannedModule>,
}

/// One pipeline, stages in ascending priority.
#[derive(Debug, Clone)]
pub struct PlannedPipeline {
    /// The pipeline as configured.
    pub config: EtlPipelineConfig,
    /// The stages in execution order.
    pub stages: Vec<PlannedStage>,
}

struct Inner {
    pipelines: Vec<PlannedPipeline>,
    filters: FilterSet,
    conditions: ConditionSet,
}

/// A configuration compiled for selection and execution. Immutable, `Send +
/// Sync`, cheap to clone.
#[derive(Clone)]
pub struct Plan {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("pipelines", &self.inner.pipelines.len())
            .field("filters", &self.inner.filters)
            .field("conditions", &self.inner.conditions)
            .finish()
    }
}

/// Per-thread scratch space for selection.
pub struct PlanScratch {
    filters: rustmq_etl_filter::Cache,
    conditions: rustmq_etl_condition::Scratch,
}

/// A module that runs for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// The pipeline's id.
    pub pipeline: String,
    /// The stage's priority.
    pub priority: u32,
    /// The module's id.
    pub module: String,
}

/// A module that does not run for a message, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The pipeline's id.
    pub pipeline: String,
    /// The stage's priority.
    pub priority: u32,
    /// The module's id.
    pub module: String,
    /// Which filter or rule said no, for a person to read.
    pub reason: String,
}

/// The outcome of [`Plan::explain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The modules that run, in execution order.
    pub modules: Vec<ModuleRef>,
    /// The modules that do not, in configuration order.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Compiles a validated configuration.
    pub fn build(config: &Config) -> Result<Plan, PlanError> {
        let mut filters = FilterSetBuilder::new();
        let mut conditions = ConditionSetBuilder::new();
        let mut pipelines = Vec::with_capacity(config.pipelines().len());
        for source in config.pipelines() {
            let p = &source.pipeline;
            let mut stages = Vec::with_capacity(p.stages.len());
            for stage in &p.stages {
                let mut modules = Vec::with_capacity(stage.modules.len());
                for m in &stage.modules {
                    let error = |message: String| PlanError {
                        pipeline: p.pipeline_id.clone(),
                        module: m.module_id.clone(),
                        message,
                    };
                    let topic_filters = m
                        .topic_filters
                        .iter()
                        .map(|f| f.to_filter().map_err(|e| error(e.to_string())))
                        .collect::<Result<Vec<_>, _>>()?;
                    let rules = m
                        .conditional_rules
                        .iter()
                        .map(|r| r.to_rule().map_err(|e| error(e.to_string())))
                        .collect::<Result<Vec<_>, _>>()?;
                    modules.push(PlannedModule {
                        module_id: m.module_id.clone(),
                        instance_config: m.instance_config.clone(),
                        slot: filters.add_slot(topic_filters),
                        group: conditions.add_group(rules),
                    });
                }
                stages.push(PlannedStage {
                    priority: stage.priority,
                    parallel_execution: stage.parallel_execution,
                    modules,
                });
            }
            stages.sort_by_key(|s| s.priority);
            pipelines.push(PlannedPipeline {
                config: p.clone(),
                stages,
            });
        }
        let filters = filters.build().map_err(|e| PlanError {
            pipeline: String::new(),
            module: String::new(),
            message: e.to_string(),
        })?;
        Ok(Plan {
            inner: Arc::new(Inner {
                pipelines,
                filters,
                conditions: conditions.build(),
            }),
        })
    }

    /// The pipelines in the order they apply, disabled ones included.
    pub fn pipelines(&self) -> &[PlannedPipeline] {
        &self.inner.pipelines
    }

    /// Scratch space for [`Plan::explain`]; keep one per thread.
    pub fn create_scratch(&self) -> PlanScratch {
        PlanScratch {
            filters: self.inner.filters.create_cache(),
            conditions: self.inner.conditions.create_scratch(),
        }
    }

    /// Decides for every module whether it runs for `message`, judged on the
    /// message as given (a dry run: nothing executes). `now_ms` is the clock of
    /// `MessageAge` rules.
    pub fn explain(
        &self,
        message: &Message,
        now_ms: i64,
        scratch: &mut PlanScratch,
    ) -> Explanation {
        let inner = &*self.inner;
        let matches = inner.filters.matches(&message.topic, &mut scratch.filters);
        let mut context = inner
            .conditions
            .context(message, now_ms, &mut scratch.conditions);
        let mut explanation = Explanation::default();
        for pipeline in &inner.pipelines {
            let id = &pipeline.config.pipeline_id;
            for stage in &pipeline.stages {
                for module in &stage.modules {
                    let reason = if !pipeline.config.enabled {
                        Some("the pipeline is disabled".to_owned())
                    } else if !matches.contains(module.slot) {
                        Some(self.filter_reason(module.slot, &message.topic, &matches))
                    } else {
                        context.first_failure(module.group).map(|f| {
                            format!(
                                "conditional rule {} (`{}`) does not hold: {}",
                                f.index + 1,
                                f.rule,
                                f.reason
                            )
                        })
                    };
                    match reason {
                        None => explanation.modules.push(ModuleRef {
                            pipeline: id.clone(),
                            priority: stage.priority,
                            module: module.module_id.clone(),
                        }),
                        Some(reason) => explanation.skipped.push(Skipped {
                            pipeline: id.clone(),
                            priority: stage.priority,
                            module: module.module_id.clone(),
                            reason,
                        }),
                    }
                }
            }
        }
        explanation
    }

    fn filter_reason(
        &self,
        slot: SlotId,
        topic: &str,
        matches: &rustmq_etl_filter::Matches<'_>,
    ) -> String {
        let mut reason = format!("no topic filter accepts topic {topic:?}:");
        for (i, (id, filter)) in self.inner.filters.slot_filters(slot).enumerate() {
            let verdict = if matches.pattern_matched(id) {
                "matches, and the filter is negated"
            } else {
                "does not match"
            };
            let _ = write!(
                reason,
                "{} {filter} {verdict}",
                if i == 0 { "" } else { ";" }
            );
        }
        reason
    }
}
