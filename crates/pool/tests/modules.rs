//! The real modules of fixtures/modules through a real pool: what the sample
//! modules do to messages, and every hostile module contained with the right
//! error kind while the next call on the same module succeeds.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustmq_etl_core::{ErrorKind, Message, ModuleSettings, ModuleSpec, Outcome};
use rustmq_etl_pool::{Abi, LoadError, LoadedModule, Pool, PoolConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join(format!("../../fixtures/modules/{name}.wasm"))
}

/// One pool for the whole file: calibrating and starting workers once.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        Pool::new(PoolConfig {
            workers: 2,
            ..PoolConfig::default()
        })
        .unwrap()
    })
}

fn spec(id: &str, settings: ModuleSettings) -> ModuleSpec {
    ModuleSpec::new(id).with_settings(settings)
}

fn load(id: &str, file: &str, settings: ModuleSettings) -> LoadedModule {
    pool()
        .load_file(&spec(id, settings), &fixture(file))
        .unwrap()
}

/// Default settings but for `custom_config`.
fn with_config(custom_config: &str) -> ModuleSettings {
    ModuleSettings::default().custom_config(custom_config)
}

/// The shipped module `file` loaded as `id` with `custom_config`.
fn configured(id: &str, file: &str, custom_config: &str) -> LoadedModule {
    load(id, file, with_config(custom_config))
}

fn json_message(topic: &str, payload: &str) -> Message {
    let mut m = Message::new(topic, payload.to_owned());
    m.headers.push("content-type", "application/json");
    m
}

/// Calls `module` on `message` and applies its edits.
fn replaced(module: &LoadedModule, message: &Message) -> Message {
    match pool().call_blocking(module, message) {
        Ok(Outcome::Edited(edits)) => {
            let mut out = message.clone();
            out.apply(edits);
            out
        }
        other => panic!("expected a changed message, got {other:?}"),
    }
}

#[test]
fn identity_passes_messages_unchanged() {
    let identity = load("identity", "identity", ModuleSettings::default());
    for _ in 0..3 {
        let out = pool().call_blocking(&identity, &json_message("t", "{}"));
        assert_eq!(out, Ok(Outcome::Unchanged));
    }
    let stats = identity.stats();
    assert_eq!(stats.calls, 3);
    assert!(stats.hits >= 2, "{stats:?}");
}

#[test]
fn temperature_converter_turns_celsius_into_fahrenheit() {
    let converter = load(
        "temperature-converter",
        "temperature-converter",
        ModuleSettings::default(),
    );
    let m = json_message(
        "iot.sensors.temperature",
        r#"{"sensor_type":"temperature","unit":"celsius","reading":21.5,"id":"a"}"#,
    );
    let out = replaced(&converter, &m);
    assert_eq!(
        &out.payload[..],
        br#"{"sensor_type":"temperature","unit":"fahrenheit","reading":70.7,"id":"a"}"#
    );
    assert_eq!(out.headers, m.headers, "headers untouched");
    let kelvin = json_message("t", r#"{"unit":"kelvin","reading":3}"#);
    assert_eq!(
        pool().call_blocking(&converter, &kelvin),
        Ok(Outcome::Unchanged)
    );
    // Large readings convert without overflow in the rounding; one past
    // the largest number in °F is an error, not `null`.
    let large = json_message("t", r#"{"unit":"celsius","reading":1e300}"#);
    assert_eq!(
        &replaced(&converter, &large).payload[..],
        br#"{"unit":"fahrenheit","reading":1.8e+300}"#
    );
    for module in ["temperature-converter", "temperature-converter-value"] {
        let converter = load(module, module, ModuleSettings::default());
        // × 9/5 + 32, rounded to nine decimals (binary noise away), negative
        // readings too, however large.
        for (celsius, fahrenheit) in [
            ("36.6", "97.88"),
            ("-40", "-40.0"),
            ("0.1", "32.18"),
            ("-273.15", "-459.67"),
            ("-1e300", "-1.8e+300"),
        ] {
            let m = json_message("t", &format!(r#"{{"unit":"celsius","reading":{celsius}}}"#));
            assert_eq!(
                String::from_utf8_lossy(&replaced(&converter, &m).payload),
                format!(r#"{{"unit":"fahrenheit","reading":{fahrenheit}}}"#),
                "{module}: {celsius} °C"
            );
        }
        // A reading in Celsius that is no number is the module's error.
        let text = json_message("t", r#"{"unit":"celsius","reading":"warm"}"#);
        let err = pool().call_blocking(&converter, &text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestError, "{module}: {err}");
        // Its product with 9 would overflow; the result does not.
        let near = json_message("t", r#"{"unit":"celsius","reading":5e307}"#);
        assert_eq!(
            &replaced(&converter, &near).payload[..],
            br#"{"unit":"fahrenheit","reading":9e+307}"#,
            "{module}"
        );
        let huge = json_message(
            "t",
            r#"{"unit":"celsius","reading":1.7976931348623157e308}"#,
        );
        let err = pool().call_blocking(&converter, &huge).unwrap_err();
        assert_eq!(
            (err.kind(), err.message()),
            (
                ErrorKind::GuestError,
                "`reading` in °C is past the largest number in °F"
            ),
            "{module}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// The SDK's JSON reading, as compiled into a module (where it searches
    /// strings sixteen bytes a step with wasm SIMD): `temperature-converter`
    /// converts a reading exactly when serde_json reads its payload, whatever
    /// a string before the fields it reads holds and wherever it starts.
    #[test]
    fn temperature_converter_reads_strings_as_serde_json_does(
        pad in 0..20usize,
        pieces in proptest::collection::vec(
            proptest::sample::select(vec![
                "plain text ", "x", r#"\""#, r"\\", r"\n", r"\u00e9", r"\ud83d\ude00",
                "é", "€", "😀", "\"", "\u{1}", "\u{1f}", "\u{7f}", r"\x", r"\u12",
            ]),
            0..24,
        ),
        broken_utf8 in proptest::bool::weighted(0.05),
    ) {
        let converter = converter();
        let mut note = pieces.concat().into_bytes();
        if broken_utf8 {
            note.push(0xff);
        }
        let payload = [
            format!(r#"{{"pad":"{}","note":""#, "p".repeat(pad)).as_bytes(),
            &note,
            br#"","unit":"celsius","reading":21.5}"#,
        ]
        .concat();
        let mut message = Message::new("t", payload.clone());
        message.headers.push("content-type", "application/json");
        let answer = pool().call_blocking(converter, &message);
        match serde_json::from_slice::<serde_json::Value>(&payload) {
            Ok(mut expected) => {
                let Ok(Outcome::Edited(edits)) = answer else {
                    panic!("{:?}: expected a conversion, got {answer:?}", String::from_utf8_lossy(&payload));
                };
                message.apply(edits);
                expected["unit"] = "fahrenheit".into();
                expected["reading"] = 70.7.into();
                let got: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                proptest::prop_assert_eq!(got, expected);
            }
            Err(_) => proptest::prop_assert_eq!(answer, Ok(Outcome::Unchanged)),
        }
    }
}

fn converter() -> &'static LoadedModule {
    static CONVERTER: OnceLock<LoadedModule> = OnceLock::new();
    CONVERTER.get_or_init(|| {
        load(
            "temperature-converter",
            "temperature-converter",
            ModuleSettings::default(),
        )
    })
}

#[test]
fn pressure_normalizer_converts_to_the_configured_unit() {
    let normalizer = configured(
        "pressure-normalizer",
        "pressure-normalizer",
        r#"{"unit": "kPa"}"#,
    );
    let m = json_message(
        "iot.sensors.pressure",
        r#"{"unit":"hPa","reading":1013.25}"#,
    );
    let out = replaced(&normalizer, &m);
    assert_eq!(&out.payload[..], br#"{"unit":"kPa","reading":101.325}"#);
    let bad = json_message("t", r#"{"unit":"furlongs","reading":1}"#);
    let err = pool().call_blocking(&normalizer, &bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestError);
    assert!(err.message().contains("unknown pressure unit \"furlongs\""));
}

#[test]
fn message_validator_checks_required_fields() {
    let validator = configured(
        "message-validator",
        "message-validator",
        r#"{"required_fields": ["user", "action"]}"#,
    );
    let ok = replaced(
        &validator,
        &json_message("events.web", r#"{"user":"u","action":"a"}"#),
    );
    assert_eq!(ok.headers.get("x-validation"), Some("passed"));
    let missing = replaced(&validator, &json_message("events.web", r#"{"user":"u"}"#));
    assert_eq!(missing.headers.get("x-validation"), Some("failed"));
    assert_eq!(
        missing.headers.get("x-validation-error"),
        Some("missing required fields: action")
    );
    let strict = configured(
        "message-validator-strict",
        "message-validator",
        r#"{"strict_mode": true, "required_fields": ["user"]}"#,
    );
    let err = pool()
        .call_blocking(&strict, &json_message("e", "not json"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestError);
    assert!(err.message().starts_with("payload is not JSON"), "{err}");
    // Without a configuration: a JSON object passes; anything else fails
    // validation (not strict: it passes on, marked so, with the reason).
    let plain = load(
        "message-validator-default",
        "message-validator",
        ModuleSettings::default(),
    );
    let object = replaced(&plain, &json_message("e", r#"{"a":1}"#));
    assert_eq!(object.headers.get("x-validation"), Some("passed"));
    for (payload, why) in [
        ("not json", "payload is not JSON"),
        ("[1]", "payload is not a JSON object"),
    ] {
        let marked = replaced(&plain, &json_message("e", payload));
        assert_eq!(
            marked.headers.get("x-validation"),
            Some("failed"),
            "{payload}"
        );
        assert!(
            marked
                .headers
                .get("x-validation-error")
                .is_some_and(|e| e.starts_with(why)),
            "{payload}: {:?}",
            marked.headers
        );
    }
}

/// The text with which the shipped module `file` refuses `custom_config`
/// as it starts: one that shows what to give, and names no place in a text
/// the user did not write.
fn refused_as_it_starts(file: &str, custom_config: &str) -> String {
    let refused = pool()
        .load_file(
            &spec(&format!("{file}-bad"), with_config(custom_config)),
            &fixture(file),
        )
        .unwrap_err();
    match refused {
        LoadError::Init { message, .. } => {
            assert!(message.contains("give {"), "{message}");
            // The module's text goes on from the engine's words: it does
            // not name custom_config again.
            let text = message
                .strip_prefix("init rejected its custom_config: ")
                .unwrap_or_else(|| panic!("{message}"));
            assert!(
                !text.starts_with("custom_config") && !text.starts_with(' '),
                "{message}"
            );
            assert!(!message.contains("  "), "{message}");
            assert!(!message.contains("column"), "{message}");
            message
        }
        other => panic!("{custom_config}: expected an init error, got {other:?}"),
    }
}

/// The shipped filter drops what its `custom_config` says, by a field of
/// the JSON payload, and passes on everything else unchanged; a config
/// without exactly one rule is refused as it starts.
#[test]
fn field_filter_drops_by_a_field_of_the_payload() {
    let call = |module: &LoadedModule, payload: &str| {
        pool()
            .call_blocking(module, &json_message("t", payload))
            .unwrap()
    };
    let drop = configured(
        "field-filter",
        "field-filter",
        r#"{"field": "type", "drop": ["heartbeat", 1]}"#,
    );
    assert_eq!(call(&drop, r#"{"type": "heartbeat"}"#), Outcome::Dropped);
    // Numbers by value.
    assert_eq!(call(&drop, r#"{"type": 1.0}"#), Outcome::Dropped);
    assert_eq!(call(&drop, r#"{"type": 1e0}"#), Outcome::Dropped);
    for kept in [
        r#"{"type": "reading"}"#,
        r#"{"type": "1"}"#,
        r#"{"type": 1.5}"#,
        r#"{"other": 1}"#,
        "not json",
        "[1]",
    ] {
        assert_eq!(call(&drop, kept), Outcome::Unchanged, "{kept}");
    }
    // Integers exactly (two ids past what an f64 tells apart), and values
    // at any depth by the same rules.
    let ids = configured(
        "field-filter-ids",
        "field-filter",
        r#"{"field": "id", "drop": [9007199254740992, {"a": [1, 2]}]}"#,
    );
    assert_eq!(call(&ids, r#"{"id": 9007199254740992}"#), Outcome::Dropped);
    assert_eq!(
        call(&ids, r#"{"id": 9007199254740993}"#),
        Outcome::Unchanged
    );
    assert_eq!(call(&ids, r#"{"id": {"a": [1.0, 2e0]}}"#), Outcome::Dropped);
    assert_eq!(call(&ids, r#"{"id": {"a": [2, 1]}}"#), Outcome::Unchanged);
    // Objects whatever the order of their keys; a float is not the integer
    // it rounds to.
    let objects = configured(
        "field-filter-objects",
        "field-filter",
        r#"{"field": "id", "drop": [{"a": 1, "b": 2}, 9007199254740993]}"#,
    );
    assert_eq!(
        call(&objects, r#"{"id": {"b": 2, "a": 1}}"#),
        Outcome::Dropped
    );
    assert_eq!(
        call(&objects, r#"{"id": 9007199254740993.0}"#),
        Outcome::Unchanged
    );
    let keep = configured(
        "field-filter-keep",
        "field-filter",
        r#"{"field": "level", "keep": ["error", null]}"#,
    );
    assert_eq!(call(&keep, r#"{"level": "error"}"#), Outcome::Unchanged);
    assert_eq!(call(&keep, r#"{"level": null}"#), Outcome::Unchanged);
    for dropped in [r#"{"level": "info"}"#, r#"{"other": 1}"#, "not json"] {
        assert_eq!(call(&keep, dropped), Outcome::Dropped, "{dropped}");
    }
    // A large field that is an array, against lists of no array or object:
    // equal to none, without being read into the module's memory (it failed
    // `memory_limit` when it was).
    let nested = format!(
        r#"{{"type": [{}[]], "level": [{0}[]]}}"#,
        "[],".repeat(700_000)
    );
    assert_eq!(call(&drop, &nested), Outcome::Unchanged);
    assert_eq!(call(&keep, &nested), Outcome::Dropped);
    for config in [
        "",
        r#"{"field": "type"}"#,
        r#"{"field": "type", "drop": ["a"], "keep": ["b"]}"#,
        r#"{"field": "type", "drop": ["a"], "keep": null}"#,
        r#"{"field": "type", "drop": ["a"], "extra": 1}"#,
        r#"{"field": "type", "keep": []}"#,
        r#"{"field": "", "drop": ["a"]}"#,
        r#"["type", ["a"], null]"#,
        r#"{"field": 3, "drop": ["a"]}"#,
    ] {
        refused_as_it_starts("field-filter", config);
    }
    assert_eq!(
        refused_as_it_starts(
            "field-filter",
            r#"{"field": "type", "drop": ["a"], "extra": 1}"#
        ),
        "init rejected its custom_config: unknown field `extra`, expected one of \
         `field`, `drop`, `keep` (give {\"field\": \"type\", \"drop\": [\"heartbeat\"]} or \
         {\"field\": \"level\", \"keep\": [\"error\"]})"
    );
}

/// The shipped router moves a message to the topic its `custom_config`
/// gives for a string field of the JSON payload, every other message to its
/// default (or nowhere without one); a config it cannot route by is refused
/// as it starts.
#[test]
fn topic_router_routes_by_a_field_of_the_payload() {
    let topic = |module: &LoadedModule, topic: &str, payload: &str| match pool()
        .call_blocking(module, &json_message(topic, payload))
        .unwrap()
    {
        Outcome::Unchanged => None,
        Outcome::Edited(edits) => {
            let mut m = json_message(topic, payload);
            m.apply(edits);
            Some(m.topic)
        }
        other => panic!("{payload}: {other:?}"),
    };
    let router = configured(
        "topic-router",
        "topic-router",
        r#"{"field": "region", "topics": {"eu": "events.eu", "us": "events.us"}, "default": "events.other"}"#,
    );
    let to = |t: &str| Some(t.to_owned());
    assert_eq!(topic(&router, "in", r#"{"region": "eu"}"#), to("events.eu"));
    assert_eq!(
        topic(&router, "in", r#"{"id": 1, "region": "us"}"#),
        to("events.us")
    );
    // Escapes decoded, in the value and the key; a repeated field by its last.
    assert_eq!(
        topic(&router, "in", r#"{"regi\u006fn": "e\u0075"}"#),
        to("events.eu")
    );
    assert_eq!(
        topic(&router, "in", r#"{"region": "us", "region": "eu"}"#),
        to("events.eu")
    );
    // A large field that is not a string goes to the default without being
    // read into the module's memory (it failed `memory_limit` when it was).
    let nested = format!(r#"{{"region": [{}[]]}}"#, "[],".repeat(700_000));
    assert_eq!(topic(&router, "in", &nested), to("events.other"));
    // Exactly, as strings: anything else goes to the default.
    for other in [
        r#"{"region": "EU"}"#,
        r#"{"region": 1}"#,
        r#"{"region": null}"#,
        r#"{"other": "eu"}"#,
        "not json",
        r#"["eu"]"#,
    ] {
        assert_eq!(topic(&router, "in", other), to("events.other"), "{other}");
    }
    // Already there: unchanged.
    assert_eq!(topic(&router, "events.eu", r#"{"region": "eu"}"#), None);
    // Without a default, what is not listed stays where it is.
    let listed_only = configured(
        "topic-router-listed",
        "topic-router",
        r#"{"field": "region", "topics": {"eu": "events.eu"}}"#,
    );
    assert_eq!(
        topic(&listed_only, "in", r#"{"region": "eu"}"#),
        to("events.eu")
    );
    assert_eq!(topic(&listed_only, "in", r#"{"region": "us"}"#), None);
    for (config, why) in [
        ("", "none given"),
        ("null", "none given"),
        (r#"["region"]"#, "not a JSON object"),
        (r#"{"field": "region"}"#, "missing field `topics`"),
        (r#"{"field": "region", "topics": {}}"#, "lists no topic"),
        (
            r#"{"field": "", "topics": {"eu": "events.eu"}}"#,
            "names no field",
        ),
        (
            r#"{"field": "region", "topics": {"eu": "events.eu", "b": "", "a": ""}}"#,
            r#"routes "a" to an empty topic"#,
        ),
        (
            r#"{"field": "region", "topics": {"eu": "events.eu"}, "default": ""}"#,
            "has an empty `default` topic",
        ),
        (
            r#"{"field": "region", "topics": {"eu": 1}}"#,
            "invalid type",
        ),
        (
            r#"{"field": "region", "topics": {"eu": "events.eu"}, "extra": 1}"#,
            "unknown field `extra`",
        ),
    ] {
        let message = refused_as_it_starts("topic-router", config);
        assert!(message.contains(why), "{config}: {message}");
    }
}

/// Each shipped module whose `custom_config` is optional refuses a bad one
/// as it starts, saying why and showing what to give.
#[test]
fn a_bad_custom_config_is_refused_at_load() {
    for (file, config, why) in [
        (
            "message-validator",
            r#"{"strict": true}"#,
            "unknown field `strict`",
        ),
        ("message-validator", "[1]", "not a JSON object"),
        (
            "sensor-data-validator",
            r#"{"max": 1}"#,
            "unknown field `max`",
        ),
        (
            "sensor-data-validator",
            r#"{"min_reading": "0"}"#,
            "invalid type: string",
        ),
        (
            "pressure-normalizer",
            r#"{"unit": 1}"#,
            "invalid type: integer `1`",
        ),
        (
            "geolocation-enricher",
            r#"{"networks": {}}"#,
            "invalid type: map",
        ),
        (
            "message-formatter",
            r#"{"pretty": "yes"}"#,
            "invalid type: string",
        ),
    ] {
        let message = refused_as_it_starts(file, config);
        assert!(message.contains(why), "{file} {config}: {message}");
    }
}

#[test]
fn geolocation_enricher_uses_the_longest_matching_network() {
    // The longest match, whatever order the networks are listed in.
    let narrow = r#"{"cidr": "203.0.113.0/24", "country": "AU", "region": "NSW"}"#;
    let wide = r#"{"cidr": "203.0.0.0/8", "country": "AU"}"#;
    let v6 = r#"{"cidr": "2001:db8::/32", "country": "NL", "region": "NH"}"#;
    for networks in [[narrow, wide, v6], [wide, v6, narrow]] {
        let config = ModuleSettings::default()
            .custom_config(format!(r#"{{"networks": [{}]}}"#, networks.join(", ")));
        geolocation_enricher_answers(load("geolocation-enricher", "geolocation-enricher", config));
    }
}

/// The answers of a `geolocation-enricher` of the networks above.
fn geolocation_enricher_answers(enricher: LoadedModule) {
    let message = |ip: &str| {
        let mut m = json_message("events.web.click", "{}");
        m.headers.push("client_ip", ip);
        m
    };
    let call = |ip: &str| replaced(&enricher, &message(ip));
    let out = call("203.0.113.7");
    assert_eq!(
        (
            out.headers.get("geo-country"),
            out.headers.get("geo-region")
        ),
        (Some("AU"), Some("NSW"))
    );
    let out = call("203.1.2.3");
    assert_eq!(
        (
            out.headers.get("geo-country"),
            out.headers.get("geo-region")
        ),
        (Some("AU"), None)
    );
    let out = call("2001:db8::1");
    assert_eq!(out.headers.get("geo-region"), Some("NH"));
    assert_eq!(
        call("198.51.100.1").headers.get("geo-country"),
        Some("unknown")
    );
    assert_eq!(
        pool().call_blocking(&enricher, &message("not an ip")),
        Ok(Outcome::Unchanged)
    );
}

#[test]
fn content_analyzer_and_message_formatter() {
    let analyzer = load(
        "content-analyzer",
        "content-analyzer",
        ModuleSettings::default(),
    );
    let out = replaced(&analyzer, &Message::new("t", "two words\nand more"));
    assert_eq!(out.headers.get("content-kind"), Some("text"));
    assert_eq!(out.headers.get("content-words"), Some("4"));
    assert_eq!(out.headers.get("content-lines"), Some("2"));
    let out = replaced(&analyzer, &Message::new("t", vec![0xff, 0xfe]));
    assert_eq!(out.headers.get("content-kind"), Some("binary"));

    let formatter = load(
        "message-formatter",
        "message-formatter",
        ModuleSettings::default(),
    );
    let out = replaced(
        &formatter,
        &Message::new("t", "{ \"b\" : [1, 2] ,\n \"a\": null }"),
    );
    assert_eq!(&out.payload[..], br#"{"b":[1,2],"a":null}"#);
    assert_eq!(out.headers.get("content-type"), Some("application/json"));
}

#[test]
fn sensor_data_validator_reports_bad_readings() {
    let validator = load(
        "sensor-data-validator",
        "sensor-data-validator",
        ModuleSettings::default(),
    );
    let ok = json_message(
        "iot.sensors.temperature",
        r#"{"sensor_type":"temperature","unit":"celsius","reading":21.5}"#,
    );
    assert_eq!(
        replaced(&validator, &ok).headers.get("x-sensor-valid"),
        Some("true")
    );
    let bad = json_message(
        "iot.sensors.temperature",
        r#"{"sensor_type":"temperature","unit":"celsius","reading":"hot"}"#,
    );
    let err = pool().call_blocking(&validator, &bad).unwrap_err();
    assert_eq!(
        (err.kind(), err.message()),
        (ErrorKind::GuestError, "`reading` must be a number")
    );
    // Each field's reason, and no bounds without a configuration.
    let reason = |validator: &LoadedModule, payload: &str| match pool()
        .call_blocking(validator, &json_message("t", payload))
    {
        Ok(Outcome::Edited(edits)) => {
            let mut out = json_message("t", payload);
            out.apply(edits);
            assert_eq!(out.headers.get("x-sensor-valid"), Some("true"), "{payload}");
            None
        }
        Ok(other) => panic!("{payload}: {other:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::GuestError, "{payload}");
            Some(e.message().to_owned())
        }
    };
    for (payload, why) in [
        (
            r#"{"unit":"c","reading":1}"#,
            Some("`sensor_type` is missing"),
        ),
        (
            r#"{"sensor_type":"","unit":"c","reading":1}"#,
            Some("`sensor_type` must be a non-empty string"),
        ),
        (
            r#"{"sensor_type":"t","unit":7,"reading":1}"#,
            Some("`unit` must be a non-empty string"),
        ),
        (
            r#"{"sensor_type":"t","unit":"c"}"#,
            Some("`reading` is missing"),
        ),
        ("[1]", Some("payload is not a JSON object")),
        (r#"{"sensor_type":"t","unit":"c","reading":-1e300}"#, None),
    ] {
        assert_eq!(reason(&validator, payload).as_deref(), why, "{payload}");
    }
    assert!(reason(&validator, "{").is_some_and(|why| why.starts_with("payload is not JSON: ")));
    // Bounds from `custom_config`: each end is within them.
    let bounded = configured(
        "sensor-data-validator-bounded",
        "sensor-data-validator",
        r#"{"min_reading": -100, "max_reading": 1000}"#,
    );
    let reading = |r: &str| format!(r#"{{"sensor_type":"t","unit":"c","reading":{r}}}"#);
    for (r, why) in [
        ("-100", None),
        ("1000", None),
        ("21.5", None),
        ("-100.5", Some("`reading` -100.5 is below -100")),
        ("1000.25", Some("`reading` 1000.25 is above 1000")),
    ] {
        assert_eq!(reason(&bounded, &reading(r)).as_deref(), why, "{r}");
    }
    // One bound alone.
    let floor = configured(
        "sensor-data-validator-floor",
        "sensor-data-validator",
        r#"{"min_reading": 0}"#,
    );
    assert_eq!(reason(&floor, &reading("1e300")), None);
    assert_eq!(
        reason(&floor, &reading("-1")).as_deref(),
        Some("`reading` -1 is below 0")
    );
}

#[test]
fn a_legacy_module_runs_unchanged_on_the_payload() {
    let legacy = load(
        "legacy-uppercase",
        "legacy-uppercase",
        ModuleSettings::default(),
    );
    assert_eq!(legacy.abi(), Abi::Legacy);
    let m = json_message("t", "hello, legacy");
    let out = replaced(&legacy, &m);
    assert_eq!(&out.payload[..], b"HELLO, LEGACY");
    assert_eq!(out.topic, "t");
}

/// Runs the hostile payload, checks the error kind, then checks that the same
/// module serves the next call (on a fresh instance).
fn contained(
    id: &str,
    config: ModuleSettings,
    kind: ErrorKind,
) -> (rustmq_etl_pool::CallError, Duration) {
    let module = load(id, id, config);
    let started = Instant::now();
    let err = pool()
        .call_blocking(&module, &Message::new("t", "attack"))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(
        pool().call_blocking(&module, &Message::new("t", "ok")),
        Ok(Outcome::Unchanged),
        "{id} after {kind}"
    );
    let stats = module.stats();
    assert_eq!(stats.failures_of(kind), 1, "{stats:?}");
    assert!(
        stats.discards >= 1,
        "the failed instance is discarded: {stats:?}"
    );
    (err, took)
}

#[test]
fn an_infinite_loop_is_stopped_at_its_time_budget() {
    let config = ModuleSettings::default().execution_timeout_ms(200);
    let (err, took) = contained("hostile-infinite-loop", config, ErrorKind::Timeout);
    assert!(err.message().contains("200 ms"), "{err}");
    // The sandbox's bound (docs/abi.md): twice the budget plus 10 ms.
    assert!(took <= Duration::from_millis(410), "stopped after {took:?}");
}

#[test]
fn a_memory_bomb_hits_its_limit() {
    let config = ModuleSettings::default().memory_limit_bytes(16 << 20);
    let (err, _) = contained("hostile-memory-bomb", config, ErrorKind::MemoryLimit);
    // It says how much it had, asked for and may have (its tables take
    // some of the limit).
    let numbers: Vec<u64> = err
        .message()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        err.message().starts_with("tried to grow its memory from ")
            && matches!(numbers[..], [from, to, 16_777_216, most, 64]
                if from <= most && to > most && most < 16 << 20),
        "{err}"
    );
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_trap() {
    let (err, _) = contained(
        "hostile-recursion",
        ModuleSettings::default(),
        ErrorKind::Trap,
    );
    assert!(err.message().contains("stack"), "{err}");
}

#[test]
fn a_panic_is_a_trap_that_says_what_panicked() {
    let (err, _) = contained("hostile-trap", ModuleSettings::default(), ErrorKind::Trap);
    assert!(err.message().contains("unreachable"), "{err}");
    // The SDK logs the panic's place and message; the trap quotes it
    // ("attack" is 6 bytes: index 16).
    assert!(
        err.message()
            .contains("its last error log line: panicked at hostile-trap/src/lib.rs:11: "),
        "{err}"
    );
    assert!(
        err.message().ends_with(": deliberate panic: index 16 of 3"),
        "{err}"
    );
}

#[test]
fn an_answer_outside_memory_is_refused() {
    let (err, _) = contained(
        "hostile-out-of-bounds",
        ModuleSettings::default(),
        ErrorKind::InvalidOutput,
    );
    assert!(err.message().contains("outside its"), "{err}");
}

#[test]
fn an_oversized_answer_is_refused_by_the_output_cap() {
    let config = ModuleSettings::default().max_output_bytes(1 << 20);
    let (err, _) = contained("hostile-oversized-output", config, ErrorKind::InvalidOutput);
    assert!(err.message().contains("output limit"), "{err}");
}

#[test]
fn a_slow_call_finishes_within_its_budget_and_not_beyond_it() {
    let slow = load(
        "hostile-slow",
        "hostile-slow",
        ModuleSettings::default().execution_timeout_ms(5_000),
    );
    let out = replaced(&slow, &Message::new("t", "5"));
    assert!(out.headers.get("x-slow-result").is_some());
    let tight = load(
        "hostile-slow-tight",
        "hostile-slow",
        ModuleSettings::default().execution_timeout_ms(5),
    );
    let err = pool()
        .call_blocking(&tight, &Message::new("t", "2000"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[test]
fn modules_that_are_not_rustmq_etl_modules_are_refused() {
    let err = pool()
        .load(&ModuleSpec::new("garbage"), b"\0asm\x01\0\0\0garbage")
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    // A valid module with no exports at all.
    let empty = b"\0asm\x01\0\0\0";
    let err = pool().load(&ModuleSpec::new("empty"), empty).unwrap_err();
    assert!(err.to_string().contains("exports no `memory`"), "{err}");
    // Not WebAssembly at all: a hint for the usual mistakes, none otherwise.
    for (bytes, hint) in [
        (
            &b"\x7fELF\x02\x01\x01\0"[..],
            Some("--target wasm32-unknown-unknown"),
        ),
        (b"MZ\x90\0", Some("--target wasm32-unknown-unknown")),
        (
            b"\xcf\xfa\xed\xfe\x07",
            Some("--target wasm32-unknown-unknown"),
        ),
        (b";; a comment\n(module)", Some("a .wat text file")),
        (b"  (module (func))", Some("a .wat text file")),
        (b"hello", None),
    ] {
        let err = pool().load(&ModuleSpec::new("m"), bytes).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("magic bytes"), "{text}");
        match hint {
            Some(hint) => assert!(text.contains(hint), "{text}"),
            None => assert!(text.ends_with("but with \"hell\""), "{text}"),
        }
    }
    let err = pool().load(&ModuleSpec::new("m"), b"").unwrap_err();
    assert!(err.to_string().contains("the file is empty"), "{err}");
}
