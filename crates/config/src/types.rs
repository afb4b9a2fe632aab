//! Every type error of a configuration document, for when reading it into the
//! model stopped at the first: each pipeline, stage, module, filter and rule,
//! and each field of theirs, is read on its own from the document's values,
//! so that one wrong field does not hide the next.
//!
//! Paths and messages are serde's, as serde_json words them, read from the
//! document's values (`stages[0].priority: invalid type: string "high",
//! expected u32`); serde_yaml words a few differently ("unit value" for
//! `null`), so the error the typed reading stopped at is found among them by
//! its path (`load.rs`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{
    ComparisonOperator, ConditionType, ConditionalRule, ErrorHandlingStrategy, EtlModuleInstance,
    EtlPipelineConfig, EtlStage, FilterType, ModuleInstanceConfig, TopicFilter,
};

/// A field's path (empty: the document's root) and what is wrong with it.
pub(crate) type TypeError = (String, String);

/// How one field's value is read; `yaml`: as serde_yaml reads it.
type Check = fn(&Value, bool) -> Result<(), String>;

fn check<T: DeserializeOwned>(value: &Value, _yaml: bool) -> Result<(), String> {
    T::deserialize(value).map(drop).map_err(|e| e.to_string())
}

/// A string field. serde_yaml reads any scalar as a string (`pipeline_id:
/// 2024` is the id "2024", `name: null` the name "null"), where the
/// document's values hold a number, a boolean or null.
fn string(value: &Value, yaml: bool) -> Result<(), String> {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) if yaml => Ok(()),
        value => check::<String>(value, yaml),
    }
}

/// An optional string field: null is none, in either format.
fn optional_string(value: &Value, yaml: bool) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        value => string(value, yaml),
    }
}

/// The fields of a level read as plain values, and the fields it requires.
struct Level {
    fields: &'static [(&'static str, Check)],
    required: &'static [&'static str],
}

const PIPELINE: Level = Level {
    fields: &[
        ("pipeline_id", string),
        ("name", string),
        ("description", optional_string),
        ("enabled", check::<bool>),
        ("global_timeout_ms", check::<u64>),
        ("max_retries", check::<u32>),
        ("error_handling", check::<ErrorHandlingStrategy>),
    ],
    required: &["pipeline_id", "stages"],
};

const STAGE: Level = Level {
    fields: &[
        ("priority", check::<u32>),
        ("parallel_execution", check::<bool>),
        ("stage_timeout_ms", check::<Option<u64>>),
        ("continue_on_error", check::<bool>),
    ],
    required: &["priority", "modules"],
};

const MODULE: Level = Level {
    fields: &[("module_id", string)],
    required: &["module_id"],
};

const INSTANCE: Level = Level {
    fields: &[
        ("memory_limit_bytes", check::<usize>),
        ("execution_timeout_ms", check::<u64>),
        ("max_concurrent_instances", check::<u32>),
        ("enable_caching", check::<bool>),
        ("cache_ttl_seconds", check::<u64>),
    ],
    required: &[],
};

const FILTER: Level = Level {
    fields: &[
        ("filter_type", check::<FilterType>),
        ("pattern", string),
        ("case_sensitive", check::<bool>),
        ("negate", check::<bool>),
    ],
    required: &["filter_type", "pattern"],
};

const RULE: Level = Level {
    fields: &[
        ("condition_type", check::<ConditionType>),
        ("field_path", string),
        ("operator", check::<ComparisonOperator>),
        ("value", check::<Value>),
        ("negate", check::<bool>),
    ],
    required: &["condition_type", "operator", "value"],
};

/// Every type error and missing field of `document`: one pipeline, or (in
/// `list_form`) an object with a `pipelines` list.
/// `yaml`: the document was YAML (see [`string`]).
pub(crate) fn type_errors(document: &Value, list_form: bool, yaml: bool) -> Vec<TypeError> {
    let mut walk = Walk {
        yaml,
        out: Vec::new(),
    };
    if list_form {
        walk.each::<EtlPipelineConfig>(document.get("pipelines"), "pipelines", Walk::pipeline);
    } else {
        walk.pipeline(document, "");
    }
    walk.out
}

/// The errors found so far, and how the document was read.
struct Walk {
    yaml: bool,
    out: Vec<TypeError>,
}

fn at(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

impl Walk {
    fn error(&mut self, path: &str, error: String) {
        self.out.push((path.to_owned(), error));
    }

    /// The elements of the list at `path` (absent: nothing), each read by
    /// `read`; a value that is not a list is read as a list of `T`.
    fn each<T: DeserializeOwned>(
        &mut self,
        list: Option<&Value>,
        path: &str,
        read: fn(&mut Walk, &Value, &str),
    ) {
        match list {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    read(self, item, &format!("{path}[{i}]"));
                }
            }
            Some(other) => {
                if let Err(e) = check::<Vec<T>>(other, self.yaml) {
                    self.error(path, e);
                }
            }
        }
    }

    /// Reads `value` as an object of `level`'s fields; `T` words the error
    /// for a value that is not an object. Returns the object, to read its
    /// lists.
    fn level<'v, T: DeserializeOwned>(
        &mut self,
        value: &'v Value,
        path: &str,
        level: &Level,
    ) -> Option<&'v serde_json::Map<String, Value>> {
        let Value::Object(object) = value else {
            if let Err(e) = check::<T>(value, self.yaml) {
                self.error(path, e);
            }
            return None;
        };
        for name in level.required {
            if !object.contains_key(*name) {
                self.error(path, format!("missing field `{name}`"));
            }
        }
        for (name, read) in level.fields {
            if let Some(Err(e)) = object.get(*name).map(|v| read(v, self.yaml)) {
                self.error(&at(path, name), e);
            }
        }
        Some(object)
    }

    fn pipeline(&mut self, value: &Value, path: &str) {
        if let Some(object) = self.level::<EtlPipelineConfig>(value, path, &PIPELINE) {
            self.each::<EtlStage>(object.get("stages"), &at(path, "stages"), Walk::stage);
        }
    }

    fn stage(&mut self, value: &Value, path: &str) {
        if let Some(object) = self.level::<EtlStage>(value, path, &STAGE) {
            self.each::<EtlModuleInstance>(
                object.get("modules"),
                &at(path, "modules"),
                Walk::module,
            );
        }
    }

    fn module(&mut self, value: &Value, path: &str) {
        let Some(object) = self.level::<EtlModuleInstance>(value, path, &MODULE) else {
            return;
        };
        if let Some(instance) = object.get("instance_config") {
            self.level::<ModuleInstanceConfig>(instance, &at(path, "instance_config"), &INSTANCE);
        }
        self.each::<TopicFilter>(
            object.get("topic_filters"),
            &at(path, "topic_filters"),
            |walk, value, path| {
                walk.level::<TopicFilter>(value, path, &FILTER);
            },
        );
        self.each::<ConditionalRule>(
            object.get("conditional_rules"),
            &at(path, "conditional_rules"),
            |walk, value, path| {
                walk.level::<ConditionalRule>(value, path, &RULE);
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{
        FILTER_FIELDS, INSTANCE_FIELDS, MODULE_FIELDS, PIPELINE_FIELDS, RULE_FIELDS, STAGE_FIELDS,
    };

    /// Each level reads every field of the model but its lists (read
    /// element by element) and `custom_config` (any value), in the model's
    /// order.
    #[test]
    fn every_field_of_the_model_is_read() {
        let names = |level: &Level| level.fields.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        let without = |all: &[&'static str], lists: &[&str]| {
            all.iter()
                .copied()
                .filter(|f| !lists.contains(f))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&PIPELINE), without(PIPELINE_FIELDS, &["stages"]));
        assert_eq!(names(&STAGE), without(STAGE_FIELDS, &["modules"]));
        assert_eq!(
            names(&MODULE),
            without(
                MODULE_FIELDS,
                &["instance_config", "topic_filters", "conditional_rules"]
            )
        );
        assert_eq!(
            names(&INSTANCE),
            without(INSTANCE_FIELDS, &["custom_config"])
        );
        assert_eq!(names(&FILTER), FILTER_FIELDS);
        assert_eq!(names(&RULE), RULE_FIELDS);
    }
}
