//! `Plan::explain` on generated configurations and messages against selection.md
//! composed by hand from the filter and condition reference implementations:
//! enabled pipelines in order, stages by ascending priority, modules as declared,
//! a module running when a filter accepts the topic (or it has none) and every
//! rule holds.

#[path = "../../condition/tests/reference/mod.rs"]
mod condition_reference;
#[path = "../../filter/tests/reference/mod.rs"]
mod filter_reference;

use proptest::prelude::*;
use rustmq_etl_config::{
    ComparisonOperator, ConditionType, ConditionalRule, Config, EtlModuleInstance,
    EtlPipelineConfig, EtlStage, FilterType, Format, ModuleInstanceConfig, TopicFilter,
};
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::Plan;
use serde_json::{json, Value};

const NOW: i64 = 1_000_000;

fn expected(config: &Config, message: &Message) -> Vec<(String, u32, String)> {
    let mut run = Vec::new();
    for source in config.pipelines() {
        let p = &source.pipeline;
        if !p.enabled {
            continue;
        }
        let mut stages: Vec<&EtlStage> = p.stages.iter().collect();
        stages.sort_by_key(|s| s.priority);
        for stage in stages {
            for m in &stage.modules {
                let filters: Vec<_> = m
                    .topic_filters
                    .iter()
                    .map(|f| f.to_filter().unwrap())
                    .collect();
                let accepts =
                    filter_reference::Reference::new(&[filters]).accepts(0, &message.topic);
                let holds = m
                    .conditional_rules
                    .iter()
                    .all(|r| condition_reference::holds(&r.to_rule().unwrap(), message, NOW));
                if accepts && holds {
                    run.push((p.pipeline_id.clone(), stage.priority, m.module_id.clone()));
                }
            }
        }
    }
    run
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let kind = prop::sample::select(vec![
        FilterType::Exact,
        FilterType::Prefix,
        FilterType::Suffix,
        FilterType::Contains,
        FilterType::Wildcard,
        FilterType::Regex,
    ]);
    (
        kind,
        prop::sample::select(vec!["a", "a.b", "B", "*", "a.*", "?.b", "^a", "b$", ""]),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(filter_type, pattern, case_sensitive, negate)| TopicFilter {
                filter_type,
                pattern: pattern.to_owned(),
                case_sensitive,
                negate,
            },
        )
        .prop_filter("a valid pattern for the kind", |f| f.to_filter().is_ok())
}

fn rule() -> impl Strategy<Value = ConditionalRule> {
    use ComparisonOperator::*;
    let subject = prop_oneof![
        Just((ConditionType::HeaderValue, "h")),
        Just((ConditionType::PayloadField, "$.x")),
        Just((ConditionType::PayloadField, "y[0]")),
        Just((ConditionType::MessageSize, "")),
        Just((ConditionType::MessageAge, "")),
    ];
    let operator = prop::sample::select(vec![
        Equals,
        NotEquals,
        GreaterThan,
        LessThan,
        Contains,
        StartsWith,
        Matches,
    ]);
    let value = prop::sample::select(vec![json!(1), json!("a"), json!(10), json!(true)]);
    (subject, operator, value, prop::bool::weighted(0.2)).prop_map(
        |((condition_type, path), operator, value, negate)| ConditionalRule {
            condition_type,
            field_path: path.to_owned(),
            operator,
            value: if operator == Matches {
                json!("^a")
            } else {
                value
            },
            negate,
        },
    )
}

fn module(index: usize) -> impl Strategy<Value = EtlModuleInstance> {
    (
        prop::collection::vec(topic_filter(), 0..3),
        prop::collection::vec(rule(), 0..2),
    )
        .prop_map(
            move |(topic_filters, conditional_rules)| EtlModuleInstance {
                module_id: format!("m{index}"),
                instance_config: ModuleInstanceConfig::default(),
                topic_filters,
                conditional_rules,
            },
        )
}

fn pipeline(index: usize) -> impl Strategy<Value = EtlPipelineConfig> {
    let stages = prop::collection::btree_set(0u32..5, 1..4).prop_flat_map(|priorities| {
        let priorities: Vec<u32> = priorities.into_iter().rev().collect(); // declared out of order
        let stages: Vec<_> = priorities
            .into_iter()
            .map(|priority| {
                (prop::collection::vec(0usize..1, 1..3), any::<bool>()).prop_flat_map(
                    move |(slots, parallel)| {
                        let modules: Vec<_> = (0..slots.len()).map(module).collect();
                        modules.prop_map(move |modules| EtlStage {
                            priority,
                            modules,
                            parallel_execution: parallel,
                            stage_timeout_ms: None,
                            continue_on_error: false,
                        })
                    },
                )
            })
            .collect();
        stages
    });
    (stages, prop::bool::weighted(0.8)).prop_map(move |(stages, enabled)| EtlPipelineConfig {
        pipeline_id: format!("p{index}"),
        name: String::new(),
        description: None,
        enabled,
        stages,
        global_timeout_ms: 5000,
        max_retries: 3,
        error_handling: Default::default(),
    })
}

fn message() -> impl Strategy<Value = Message> {
    let topic = prop::sample::select(vec!["a", "a.b", "A.B", "b", "x.a.b", "*", ""]);
    let payload = prop::sample::select(vec![
        r#"{"x": 1, "y": ["a"]}"#,
        r#"{"x": "a"}"#,
        "[]",
        "not json",
        r#"{"y": [10]}"#,
    ]);
    let header = prop::option::of(prop::sample::select(vec!["1", "a", "10", "true"]));
    (topic, payload, header, prop::option::of(NOW - 20..NOW + 20)).prop_map(
        |(topic, payload, header, ts)| {
            let mut m = Message::new(topic, payload.to_owned());
            if let Some(h) = header {
                m.headers.push("h", h);
            }
            m.timestamp_ms = ts;
            m
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn explain_follows_selection_md(pipelines in (pipeline(0), pipeline(1)), messages in prop::collection::vec(message(), 1..5)) {
        let text = serde_json::to_string(&json!({ "pipelines": [pipelines.0, pipelines.1] })).unwrap();
        let loaded = Config::from_text(&text, Format::Json, None).unwrap();
        let plan = Plan::build(&loaded.config).unwrap();
        let mut scratch = plan.create_scratch();
        let total: usize = loaded.config.pipelines().iter().flat_map(|p| &p.pipeline.stages).map(|s| s.modules.len()).sum();
        for message in &messages {
            let explanation = plan.explain(message, NOW, &mut scratch);
            let got: Vec<_> = explanation.modules.iter().map(|m| (m.pipeline.clone(), m.priority, m.module.clone())).collect();
            prop_assert_eq!(&got, &expected(&loaded.config, message), "message {:?}", message);
            prop_assert_eq!(explanation.modules.len() + explanation.skipped.len(), total);
            prop_assert!(explanation.skipped.iter().all(|s| !s.reason.is_empty()));
        }
    }
}

#[test]
fn a_disabled_pipeline_skips_every_module_with_that_reason() {
    let text = r#"{"pipeline_id": "off", "enabled": false, "stages": [{"priority": 0, "modules": [{"module_id": "m"}]}]}"#;
    let config = Config::from_text(text, Format::Json, None).unwrap().config;
    let plan = Plan::build(&config).unwrap();
    let e = plan.explain(&Message::new("t", ""), NOW, &mut plan.create_scratch());
    assert!(e.modules.is_empty());
    assert_eq!(e.skipped[0].reason, "the pipeline is disabled");
    let _: Value = serde_json::from_str(text).unwrap();
}
