//! The data model of design.md, as plain serde data with documented defaults.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Defaults of the fields a configuration may leave out.
pub mod defaults {
    /// `enabled`: pipelines run unless switched off.
    pub const ENABLED: bool = true;
    /// `global_timeout_ms`: 5 seconds for a message's whole trip through a pipeline.
    pub const GLOBAL_TIMEOUT_MS: u64 = 5_000;
    /// `max_retries`: 3 retries under `RetryWithBackoff`.
    pub const MAX_RETRIES: u32 = 3;
    use rustmq_etl_core::defaults as module;

    /// `memory_limit_bytes`: 64 MiB of memory per instance.
    pub const MEMORY_LIMIT_BYTES: usize = module::MEMORY_LIMIT_BYTES;
    /// `execution_timeout_ms`: 1 second per call.
    pub const EXECUTION_TIMEOUT_MS: u64 = module::EXECUTION_TIMEOUT_MS;
    /// `max_concurrent_instances`: 10 instances of one module at once.
    pub const MAX_CONCURRENT_INSTANCES: u32 = module::MAX_CONCURRENT_INSTANCES;
    /// `enable_caching`: warm instances are kept and reused.
    pub const ENABLE_CACHING: bool = module::ENABLE_CACHING;
    /// `cache_ttl_seconds`: an idle instance is kept for 5 minutes.
    pub const CACHE_TTL_SECONDS: u64 = module::CACHE_TTL_SECONDS;
    /// `case_sensitive`: topic filters compare letters exactly.
    pub const CASE_SENSITIVE: bool = true;

    pub(crate) fn enabled() -> bool {
        ENABLED
    }
    pub(crate) fn global_timeout_ms() -> u64 {
        GLOBAL_TIMEOUT_MS
    }
    pub(crate) fn max_retries() -> u32 {
        MAX_RETRIES
    }
    pub(crate) fn memory_limit_bytes() -> usize {
        MEMORY_LIMIT_BYTES
    }
    pub(crate) fn execution_timeout_ms() -> u64 {
        EXECUTION_TIMEOUT_MS
    }
    pub(crate) fn max_concurrent_instances() -> u32 {
        MAX_CONCURRENT_INSTANCES
    }
    pub(crate) fn enable_caching() -> bool {
        ENABLE_CACHING
    }
    pub(crate) fn cache_ttl_seconds() -> u64 {
        CACHE_TTL_SECONDS
    }
    pub(crate) fn case_sensitive() -> bool {
        CASE_SENSITIVE
    }
}

/// One pipeline: stages of modules run in ascending priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlPipelineConfig {
    /// Unique across the whole configuration.
    pub pipeline_id: String,
    /// A human-readable name; defaults to the `pipeline_id`.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the pipeline runs; default `true`.
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// At least one stage; priorities unique within the pipeline.
    pub stages: Vec<EtlStage>,
    /// Time budget of a message's trip through the pipeline; default 5000.
    #[serde(default = "defaults::global_timeout_ms")]
    pub global_timeout_ms: u64,
    /// Retries under `RetryWithBackoff`; default 3.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// What a module failure does; default `StopPipeline`.
    #[serde(default)]
    pub error_handling: ErrorHandlingStrategy,
}

/// The modules of one priority level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlStage {
    /// Lower numbers run first.
    pub priority: u32,
    /// At least one module, run in the order listed.
    pub modules: Vec<EtlModuleInstance>,
    /// Whether the stage's modules run concurrently on the stage's input; default `false`.
    #[serde(default)]
    pub parallel_execution: bool,
    /// Time budget of the stage; default none (the pipeline's applies).
    #[serde(default)]
    pub stage_timeout_ms: Option<u64>,
    /// Whether a failed module is skipped instead of failing the stage; default `false`.
    #[serde(default)]
    pub continue_on_error: bool,
}

/// One module in a stage, with what selects it and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlModuleInstance {
    /// The module's name: letters, digits, `-`, `_` and `.`, not starting with `.`.
    pub module_id: String,
    /// Resource limits and module configuration; every field has a default.
    #[serde(default)]
    pub instance_config: ModuleInstanceConfig,
    /// Topic filters, any of which selects the module; default none (every topic).
    #[serde(default)]
    pub topic_filters: Vec<TopicFilter>,
    /// Rules that must all hold; default none.
    #[serde(default)]
    pub conditional_rules: Vec<ConditionalRule>,
}

/// A pattern matched against the message topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicFilter {
    /// How `pattern` is matched.
    pub filter_type: FilterType,
    /// The pattern.
    pub pattern: String,
    /// Default `true`; `false` compares under Unicode simple case folding.
    #[serde(default = "defaults::case_sensitive")]
    pub case_sensitive: bool,
    /// Accept the topics the pattern does not match; default `false`.
    #[serde(default)]
    pub negate: bool,
}

/// The six filter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum FilterType {
    Exact,
    Wildcard,
    Regex,
    Prefix,
    Suffix,
    Contains,
}

/// A comparison over something read from the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionalRule {
    /// What is read.
    pub condition_type: ConditionType,
    /// Header name or payload path; ignored (may be left out) for size and age.
    #[serde(default)]
    pub field_path: String,
    /// How it is compared.
    pub operator: ComparisonOperator,
    /// The JSON value compared with (a key twice in one of its objects is
    /// an error).
    #[serde(deserialize_with = "unique_keys::deserialize")]
    pub value: Value,
    /// Holds when the comparison is false; default `false`.
    #[serde(default)]
    pub negate: bool,
}

/// The four condition types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ConditionType {
    HeaderValue,
    PayloadField,
    MessageSize,
    MessageAge,
}

/// The ten comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ComparisonOperator {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    GreaterThanOrEqual,
    LessThanOrEqual,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
}

/// Resource limits of a module and its own configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInstanceConfig {
    /// Linear memory cap per instance; default 64 MiB; 64 KiB to 4 GiB.
    #[serde(default = "defaults::memory_limit_bytes")]
    pub memory_limit_bytes: usize,
    /// Time budget of one call; default 1000 ms.
    #[serde(default = "defaults::execution_timeout_ms")]
    pub execution_timeout_ms: u64,
    /// Most instances of the module at once; default 10.
    #[serde(default = "defaults::max_concurrent_instances")]
    pub max_concurrent_instances: u32,
    /// Keep warm instances for reuse; default `true`.
    #[serde(default = "defaults::enable_caching")]
    pub enable_caching: bool,
    /// How long an idle instance is kept; default 300.
    #[serde(default = "defaults::cache_ttl_seconds")]
    pub cache_ttl_seconds: u64,
    /// Handed to the module when it starts; default `null`. A key twice in
    /// one of its objects is an error (the readers would keep the last).
    #[serde(default, deserialize_with = "unique_keys::deserialize")]
    pub custom_config: Value,
}

impl Default for ModuleInstanceConfig {
    fn default() -> Self {
        ModuleInstanceConfig {
            memory_limit_bytes: defaults::MEMORY_LIMIT_BYTES,
            execution_timeout_ms: defaults::EXECUTION_TIMEOUT_MS,
            max_concurrent_instances: defaults::MAX_CONCURRENT_INSTANCES,
            enable_caching: defaults::ENABLE_CACHING,
            cache_ttl_seconds: defaults::CACHE_TTL_SECONDS,
            custom_config: Value::Null,
        }
    }
}

/// What happens when a module fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ErrorHandlingStrategy {
    /// Halt the pipeline and pass the message on as it entered the pipeline (the default).
    #[default]
    StopPipeline,
    /// Go on with the next module.
    SkipModule,
    /// Retry with exponential backoff, up to `max_retries` times.
    RetryWithBackoff,
    /// Route the message to the dead-letter output with the error.
    SendToDeadLetter,
}

impl ModuleInstanceConfig {
    /// A `custom_config` from its JSON text, read as a configuration file's
    /// is: a key twice in one object is an error.
    pub fn custom_config_from_json(text: &str) -> Result<Value, serde_json::Error> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let value = unique_keys::deserialize(&mut reader)?;
        reader.end()?;
        Ok(value)
    }

    /// The settings the engine runs the module with: the one conversion
    /// from a configuration's `instance_config` (the engine's own knobs keep
    /// their defaults). `custom_config` becomes its JSON text, compact and
    /// with every object's keys in sorted order. Without `serde_json`'s
    /// `preserve_order` feature (this workspace's build) its objects are
    /// sorted anyway; a program that turns the feature on (features are
    /// unified across a build) would otherwise make the order the keys were
    /// written in part of the occurrence, its metrics label and what the
    /// module's init receives.
    pub fn to_settings(&self) -> rustmq_etl_core::ModuleSettings {
        rustmq_etl_core::ModuleSettings::default()
            .memory_limit_bytes(self.memory_limit_bytes)
            .execution_timeout_ms(self.execution_timeout_ms)
            .max_concurrent_instances(self.max_concurrent_instances)
            .enable_caching(self.enable_caching)
            .idle_ttl(std::time::Duration::from_secs(self.cache_ttl_seconds))
            .custom_config(sorted_keys(&self.custom_config).to_string())
    }
}

/// `value` with every object's keys in sorted order (objects keep the order
/// of their keys when `serde_json`'s `preserve_order` feature is on).
pub(crate) fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

impl TopicFilter {
    /// The filter as the filter compiler takes it, its pattern checked.
    pub fn to_filter(&self) -> Result<rustmq_etl_filter::Filter, rustmq_etl_filter::FilterError> {
        use rustmq_etl_filter::FilterKind;
        let kind = match self.filter_type {
            FilterType::Exact => FilterKind::Exact,
            FilterType::Wildcard => FilterKind::Wildcard,
            FilterType::Regex => FilterKind::Regex,
            FilterType::Prefix => FilterKind::Prefix,
            FilterType::Suffix => FilterKind::Suffix,
            FilterType::Contains => FilterKind::Contains,
        };
        rustmq_etl_filter::Filter::new(kind, self.pattern.clone(), self.case_sensitive, self.negate)
    }
}

impl ConditionalRule {
    /// The rule as the condition evaluator takes it, checked and compiled.
    pub fn to_rule(&self) -> Result<rustmq_etl_condition::Rule, rustmq_etl_condition::RuleError> {
        use rustmq_etl_condition::{Operator, Rule, Subject};
        let subject = match self.condition_type {
            ConditionType::HeaderValue => Subject::HeaderValue(self.field_path.clone()),
            ConditionType::PayloadField => Subject::payload_field(&self.field_path)?,
            ConditionType::MessageSize => Subject::MessageSize,
            ConditionType::MessageAge => Subject::MessageAge,
        };
        let operator = match self.operator {
            ComparisonOperator::Equals => Operator::Equals,
            ComparisonOperator::NotEquals => Operator::NotEquals,
            ComparisonOperator::GreaterThan => Operator::GreaterThan,
            ComparisonOperator::LessThan => Operator::LessThan,
            ComparisonOperator::GreaterThanOrEqual => Operator::GreaterThanOrEqual,
            ComparisonOperator::LessThanOrEqual => Operator::LessThanOrEqual,
            ComparisonOperator::Contains => Operator::Contains,
            ComparisonOperator::StartsWith => Operator::StartsWith,
            ComparisonOperator::EndsWith => Operator::EndsWith,
            ComparisonOperator::Matches => Operator::Matches,
        };
        Rule::new(subject, operator, self.value.clone(), self.negate)
    }
}

/// Any value (`custom_config`, a rule's `value`), as `serde_json::Value`
/// reads it, except that a key twice in one object is an error: serde_yaml
/// and serde_json keep the last, silently, where a configuration's author
/// meant one of the two.
mod unique_keys {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(UniqueKeys)
    }

    struct UniqueKeys;

    impl<'de> DeserializeSeed<'de> for UniqueKeys {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for UniqueKeys {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
            match (i64::try_from(v), u64::try_from(v)) {
                (Ok(v), _) => Ok(Value::from(v)),
                (_, Ok(v)) => Ok(Value::from(v)),
                _ => Err(E::custom(format!("the number {v} is out of range"))),
            }
        }

        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
            u64::try_from(v)
                .map(Value::from)
                .map_err(|_| E::custom(format!("the number {v} is out of range")))
        }

        /// Not finite (YAML's `.inf`, `.nan`): `null`, as `Value` reads it.
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(value) = seq.next_element_seed(UniqueKeys)? {
                values.push(value);
            }
            Ok(Value::Array(values))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if object.contains_key(&key) {
                    return Err(de::Error::custom(format!(
                        "the key `{key}` is given twice in one object"
                    )));
                }
                let value = map.next_value_seed(UniqueKeys)?;
                object.insert(key, value);
            }
            Ok(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // (In this workspace's build `serde_json` sorts objects anyway: this pins
    // the form; the sorting matters where `preserve_order` is on.)
    fn a_key_twice_in_a_custom_config_object_is_an_error_at_any_depth() {
        let error = ModuleInstanceConfig::custom_config_from_json(r#"{"a": [{"b": 1, "b": 2}]}"#)
            .unwrap_err();
        assert!(
            error.to_string().contains("the key `b` is given twice"),
            "{error}"
        );
        let yaml = "custom_config: {a: 1, c: {a: 2}, b: [1, {x: .inf}]}";
        let config: ModuleInstanceConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            config.custom_config,
            serde_json::json!({"a": 1, "c": {"a": 2}, "b": [1, {"x": null}]}),
            "the same key in two objects is two keys; .inf is null, as Value reads it"
        );
        let error = serde_yaml::from_str::<ModuleInstanceConfig>("custom_config: {a: 1, a: 1}")
            .unwrap_err();
        assert!(
            error.to_string().contains("the key `a` is given twice"),
            "{error}"
        );
        assert_eq!(
            ModuleInstanceConfig::custom_config_from_json("18446744073709551615 ").unwrap(),
            serde_json::json!(u64::MAX)
        );
        assert!(ModuleInstanceConfig::custom_config_from_json("{} x").is_err());
    }

    #[test]
    fn custom_config_becomes_compact_json_with_sorted_keys() {
        let mut config: ModuleInstanceConfig = serde_json::from_str(
            r#"{"custom_config": {"b": [{"z": 1, "y": null}], "a": {"d": 2, "c": "x"}}}"#,
        )
        .unwrap();
        assert_eq!(
            config.to_settings().custom_config,
            r#"{"a":{"c":"x","d":2},"b":[{"y":null,"z":1}]}"#
        );
        config.custom_config = Value::Null;
        assert_eq!(
            config.to_settings(),
            rustmq_etl_core::ModuleSettings::default()
        );
    }
}
