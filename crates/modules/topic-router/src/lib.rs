//! A router: moves messages to another topic by a field of their JSON
//! payload.
//!
//! `custom_config` names the field, the topic for each of its values, and
//! optionally a topic for every other message:
//!
//! ```json
//! {"field": "region", "topics": {"eu": "events.eu", "us": "events.us"}, "default": "events.other"}
//! ```
//!
//! A message whose payload is a JSON object whose `field` is a string listed
//! in `topics` goes to that string's topic. Any other message — the field
//! missing or not a string, a value not listed, a payload that is not a JSON
//! object — goes to `default`, or without one stays on its topic, unchanged.
//! A message already on its new topic is unchanged. The pipelines after the
//! router, and the stages after it in its own pipeline, select modules by
//! the new topic (execution.md). Values are compared as strings, exactly
//! (case included); a `field` is a top-level key, and a payload that repeats
//! it is read by its last. Topics are taken as written: a later `Wildcard`
//! or `Regex` filter reads a `*` or `.` in one as it reads any topic's. The
//! modules after the router in its own stage were selected as the stage
//! began, by the old topic. `field` and every topic must not be empty, and
//! `topics` must list at least one value (`"default": null` is no default);
//! anything else in `custom_config` is refused as the module starts.
use std::collections::HashMap;

use rustmq_etl_sdk::json::{required_config, Object};
use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Router {
    field: String,
    topics: HashMap<String, String>,
    #[serde(default)]
    default: Option<String>,
}

const SHAPE: &str =
    r#"{"field": "region", "topics": {"eu": "events.eu"}, "default": "events.other"}"#;

fn init(custom_config: &str) -> Result<Router, String> {
    let router: Router = required_config(custom_config, SHAPE)?;
    let refused = |why: String| Err(format!("{why} (give {SHAPE})"));
    if router.field.is_empty() {
        return refused("names no field".to_owned());
    }
    if router.topics.is_empty() {
        return refused("lists no topic: `topics` maps values of the field to topics".to_owned());
    }
    // (The first in the text's order would do, but a map keeps none.)
    let mut empty: Vec<&String> = router
        .topics
        .iter()
        .filter(|(_, topic)| topic.is_empty())
        .map(|(value, _)| value)
        .collect();
    empty.sort();
    if let Some(value) = empty.first() {
        return refused(format!("routes {value:?} to an empty topic"));
    }
    if router.default.as_deref() == Some("") {
        return refused("has an empty `default` topic".to_owned());
    }
    Ok(router)
}

fn route(router: &Router, message: &Message) -> Outcome {
    // A string borrowed from the payload (escapes decoded): a field of
    // another kind is not read into memory to find out that it is not one.
    let object = Object::parse(message.payload()).ok();
    let value = object.as_ref().and_then(|object| object.str(&router.field));
    let topic = value
        .and_then(|value| router.topics.get(value.as_ref()))
        .or(router.default.as_ref());
    match topic {
        Some(topic) if topic != message.topic() => Outcome::edit().set_topic(topic.as_str()).into(),
        _ => Outcome::Unchanged,
    }
}

export!(init = init, transform = route);
