//! The compiled execution plan and module selection.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rustmq_etl_condition::{ConditionSet, ConditionSetBuilder, GroupId, Subject};
use rustmq_etl_config::{Config, EtlPipelineConfig, ModuleInstanceConfig, PipelineSource};
use rustmq_etl_core::{Edit, Message, ModuleSpec};
use rustmq_etl_filter::{FilterSet, FilterSetBuilder, SlotId};

/// Why a configuration cannot become a plan: where (the file, pipeline,
/// stage, module and field, as far as one is to blame) and why.
#[derive(Debug, Clone)]
pub struct PlanError(Box<Blame>);

/// Where a plan failed, and why.
#[derive(Debug, Clone, Default)]
struct Blame {
    file: Option<std::path::PathBuf>,
    pipeline: Option<String>,
    stage: Option<u32>,
    module: Option<String>,
    field: Option<String>,
    message: String,
}

impl Blame {
    /// A module of `source`'s pipeline, in its stage of `priority`, and
    /// `field` of it; no message yet.
    fn at(source: &PipelineSource, priority: u32, module: &str, field: Option<String>) -> Blame {
        Blame {
            file: source.file.clone(),
            pipeline: Some(source.pipeline.pipeline_id.clone()),
            stage: Some(priority),
            module: Some(module.to_owned()),
            field,
            message: String::new(),
        }
    }

    /// Where the topic filter `index` is configured, counting the filters
    /// in the order [`Plan::build`] adds them (pipelines, stages and modules
    /// as configured, each module's filters in turn); found only when an
    /// error blames one.
    fn of_filter(config: &Config, index: usize) -> Option<Blame> {
        config
            .pipelines()
            .iter()
            .flat_map(|source| {
                source.pipeline.stages.iter().flat_map(move |stage| {
                    stage.modules.iter().flat_map(move |m| {
                        (0..m.topic_filters.len()).map(move |i| (source, stage.priority, m, i))
                    })
                })
            })
            .nth(index)
            .map(|(source, priority, m, i)| {
                let field = format!("topic_filters[{i}].pattern");
                Blame::at(source, priority, &m.module_id, Some(field))
            })
    }
}

impl PlanError {
    /// The file of the pipeline to blame, if the configuration came from
    /// files and one pipeline is to blame.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.0.file.as_deref()
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let this = &self.0;
        let mut place = Vec::new();
        if let Some(pipeline) = &this.pipeline {
            place.push(format!("pipeline {pipeline:?}"));
        }
        if let Some(stage) = this.stage {
            place.push(format!("stage {stage}"));
        }
        if let Some(module) = &this.module {
            place.push(format!("module {module:?}"));
        }
        if let Some(field) = &this.field {
            place.push(format!("field '{field}'"));
        }
        if place.is_empty() {
            f.write_str(&this.message)
        } else {
            write!(f, "{}: {}", place.join(", "), this.message)
        }
    }
}

impl std::error::Error for PlanError {}

/// One module of a stage.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlannedModule {
    /// The module's id.
    pub module_id: String,
    /// Its resource limits and configuration.
    pub instance_config: ModuleInstanceConfig,
    /// Which occurrence it is: an index into [`Plan::occurrences`] (the same
    /// `module_id` with the same settings anywhere in the configuration is the
    /// same occurrence).
    pub occurrence: usize,
    /// Its position among all modules of the plan, in execution order.
    pub index: usize,
    /// Whether its occurrence is listed elsewhere in the plan too: only then
    /// can a message call it at more than one listing, and only then are its
    /// calls for a message counted across listings (a dead letter's
    /// `etl-dlq-attempts`).
    pub(crate) listed_again: bool,
    slot: SlotId,
    group: GroupId,
}

/// One stage: modules of one priority.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlannedStage {
    /// Lower runs first.
    pub priority: u32,
    /// Whether every module gets the stage's input (results combined in
    /// declaration order) instead of the one before it's output.
    pub parallel_execution: bool,
    /// The stage's time budget for one message, if it has one.
    pub stage_timeout: Option<Duration>,
    /// Whether a failed module is skipped.
    pub continue_on_error: bool,
    /// The modules in declaration order.
    pub modules: Vec<PlannedModule>,
}

/// What parts of a message some rule of the plan reads: an edit to a part no
/// rule reads does not change any module's selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    pub(crate) payload: bool,
    pub(crate) headers: bool,
    pub(crate) size: bool,
    pub(crate) age: bool,
}

impl Reads {
    /// Whether `edit` changes a part of the message some rule reads. A topic
    /// is read by filters only, and the age rules are evaluated afresh at
    /// every stage, so neither counts here.
    pub(crate) fn affected_by(&self, edit: &Edit) -> bool {
        match edit {
            Edit::SetPayload(_) => self.payload || self.size,
            Edit::SetHeader(..) | Edit::RemoveHeader(_) => self.headers || self.size,
            Edit::SetKey(_) | Edit::ClearKey => self.size,
            Edit::SetTopic(_) | Edit::SetTimestamp(_) | Edit::ClearTimestamp => false,
        }
    }
}

/// One pipeline, stages in ascending priority.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlannedPipeline {
    /// The pipeline as configured.
    pub config: EtlPipelineConfig,
    /// The stages in execution order.
    pub stages: Vec<PlannedStage>,
    /// Its modules' plan indices (each pipeline's modules are numbered one
    /// after another, stage by stage).
    indices: Range<usize>,
}

impl PlannedPipeline {
    /// Its modules' plan indices ([`PlannedModule::index`]).
    pub fn module_indices(&self) -> Range<usize> {
        self.indices.clone()
    }
}

struct Inner {
    pipelines: Vec<PlannedPipeline>,
    filters: FilterSet,
    conditions: ConditionSet,
    occurrences: Vec<ModuleSpec>,
    modules: usize,
    /// Each module's rules, by plan index.
    groups: Vec<GroupId>,
    reads: Reads,
    /// Whether any module has topic filters, or rules: without, every module
    /// accepts every topic (or message) and nothing needs evaluating.
    any_filters: bool,
    any_rules: bool,
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

/// Per-thread scratch space for selection. It belongs to the plan that made
/// it; [`Plan::explain`] given another plan's (kept across a reload, say)
/// replaces it with one of its own.
pub struct PlanScratch {
    /// The plan it belongs to (held weakly, so that no other plan can take
    /// its address while this scratch is kept).
    plan: std::sync::Weak<Inner>,
    filters: rustmq_etl_filter::Cache,
    conditions: rustmq_etl_condition::Scratch,
}

/// A module that runs for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Explanation {
    /// The modules that run, in execution order.
    pub modules: Vec<ModuleRef>,
    /// The modules that do not, in the same order (pipelines in the order
    /// they apply, stages by priority, modules as listed).
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Compiles a validated configuration.
    pub fn build(config: &Config) -> Result<Plan, PlanError> {
        let mut filters = FilterSetBuilder::new();
        let mut conditions = ConditionSetBuilder::new();
        let mut pipelines = Vec::with_capacity(config.pipelines().len());
        let mut occurrences: Vec<ModuleSpec> = Vec::new();
        let mut occurrence_of: HashMap<ModuleSpec, usize> = HashMap::new();
        let mut reads = Reads::default();
        let (mut any_filters, mut any_rules) = (false, false);
        for source in config.pipelines() {
            let p = &source.pipeline;
            let mut stages = Vec::with_capacity(p.stages.len());
            for stage in &p.stages {
                let mut modules = Vec::with_capacity(stage.modules.len());
                for m in &stage.modules {
                    let error = |message: String| {
                        PlanError(Box::new(Blame {
                            message,
                            ..Blame::at(source, stage.priority, &m.module_id, None)
                        }))
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
                    any_filters |= !topic_filters.is_empty();
                    any_rules |= !rules.is_empty();
                    for rule in &rules {
                        match rule.subject() {
                            Subject::PayloadField(_) => reads.payload = true,
                            Subject::HeaderValue(_) => reads.headers = true,
                            Subject::MessageSize => reads.size = true,
                            Subject::MessageAge => reads.age = true,
                        }
                    }
                    let spec = ModuleSpec::new(&m.module_id)
                        .with_settings(m.instance_config.to_settings());
                    let occurrence = *occurrence_of.entry(spec.clone()).or_insert_with(|| {
                        occurrences.push(spec);
                        occurrences.len() - 1
                    });
                    modules.push(PlannedModule {
                        module_id: m.module_id.clone(),
                        instance_config: m.instance_config.clone(),
                        occurrence,
                        index: 0,
                        listed_again: false,
                        slot: filters.add_slot(topic_filters),
                        group: conditions.add_group(rules),
                    });
                }
                stages.push(PlannedStage {
                    priority: stage.priority,
                    parallel_execution: stage.parallel_execution,
                    stage_timeout: stage.stage_timeout_ms.map(Duration::from_millis),
                    continue_on_error: stage.continue_on_error,
                    modules,
                });
            }
            stages.sort_by_key(|s| s.priority);
            pipelines.push(PlannedPipeline {
                config: p.clone(),
                stages,
                indices: 0..0,
            });
        }
        let filters = filters.build().map_err(|e| {
            let blamed = e
                .filter()
                .and_then(|id| Blame::of_filter(config, id.index()));
            PlanError(Box::new(Blame {
                message: e.to_string(),
                ..blamed.unwrap_or_default()
            }))
        })?;
        let mut listings = vec![0_usize; occurrences.len()];
        for module in pipelines
            .iter()
            .flat_map(|p| p.stages.iter())
            .flat_map(|s| s.modules.iter())
        {
            listings[module.occurrence] += 1;
        }
        let mut modules = 0;
        for pipeline in &mut pipelines {
            let first = modules;
            for module in pipeline
                .stages
                .iter_mut()
                .flat_map(|s| s.modules.iter_mut())
            {
                module.index = modules;
                module.listed_again = listings[module.occurrence] > 1;
                modules += 1;
            }
            pipeline.indices = first..modules;
        }
        let groups = pipelines
            .iter()
            .flat_map(|p| p.stages.iter())
            .flat_map(|s| s.modules.iter())
            .map(|m| m.group)
            .collect();
        Ok(Plan {
            inner: Arc::new(Inner {
                pipelines,
                filters,
                conditions: conditions.build(),
                occurrences,
                modules,
                groups,
                reads,
                any_filters,
                any_rules,
            }),
        })
    }

    /// The distinct module occurrences (a `module_id` with its settings), each
    /// loaded once: [`PlannedModule::occurrence`] indexes this.
    pub fn occurrences(&self) -> &[ModuleSpec] {
        &self.inner.occurrences
    }

    /// How many modules the plan has, in all pipelines and stages.
    pub fn module_count(&self) -> usize {
        self.inner.modules
    }

    pub(crate) fn reads(&self) -> Reads {
        self.inner.reads
    }

    /// Evaluates every module's topic filters on `topic`: `out(index, accepts)`
    /// for every module, by its plan index.
    pub(crate) fn select_filters(
        &self,
        topic: &str,
        scratch: &mut PlanScratch,
        mut out: impl FnMut(usize, bool),
    ) {
        if !self.inner.any_filters {
            return (0..self.inner.modules).for_each(|i| out(i, true));
        }
        let matches = self.inner.filters.matches(topic, &mut scratch.filters);
        for module in self.modules() {
            out(module.index, matches.contains(module.slot));
        }
    }

    /// Whether any module has rules (without, every module's rules hold).
    pub(crate) fn any_rules(&self) -> bool {
        self.inner.any_rules
    }

    /// Evaluates the rules of `modules` (plan indices) on `message`:
    /// `out(index, hold)` for each (the payload is read at most once, and
    /// not at all unless one of their rules reads it).
    pub(crate) fn select_rules(
        &self,
        message: &Message,
        now_ms: i64,
        scratch: &mut PlanScratch,
        modules: impl Iterator<Item = usize>,
        mut out: impl FnMut(usize, bool),
    ) {
        if !self.inner.any_rules {
            return modules.for_each(|i| out(i, true));
        }
        let mut context = self
            .inner
            .conditions
            .context(message, now_ms, &mut scratch.conditions);
        for i in modules {
            out(i, context.holds(self.inner.groups[i]));
        }
    }

    /// Why `module` does not run for `message` (for traces): its filters or
    /// its first rule that does not hold.
    pub(crate) fn why_not(
        &self,
        module: &PlannedModule,
        message: &Message,
        now_ms: i64,
        scratch: &mut PlanScratch,
    ) -> String {
        let matches = self
            .inner
            .filters
            .matches(&message.topic, &mut scratch.filters);
        if !matches.contains(module.slot) {
            return self.filter_reason(module.slot, &message.topic, &matches);
        }
        let mut context = self
            .inner
            .conditions
            .context(message, now_ms, &mut scratch.conditions);
        match context.first_failure(module.group) {
            Some(f) => format!(
                "conditional rule {} (`{}`) does not hold: {}",
                f.index + 1,
                f.rule,
                f.reason
            ),
            None => "it runs".to_owned(),
        }
    }

    fn modules(&self) -> impl Iterator<Item = &PlannedModule> {
        self.inner
            .pipelines
            .iter()
            .flat_map(|p| p.stages.iter())
            .flat_map(|s| s.modules.iter())
    }

    /// The pipelines in the order they apply, disabled ones included.
    pub fn pipelines(&self) -> &[PlannedPipeline] {
        &self.inner.pipelines
    }

    /// Scratch space for [`Plan::explain`]; keep one per thread.
    pub fn create_scratch(&self) -> PlanScratch {
        PlanScratch {
            plan: Arc::downgrade(&self.inner),
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
        if !std::ptr::eq(scratch.plan.as_ptr(), Arc::as_ptr(&self.inner)) {
            *scratch = self.create_scratch();
        }
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
        let mut reason = format!(
            "no topic filter accepts topic {}:",
            rustmq_etl_core::Excerpt(topic)
        );
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
