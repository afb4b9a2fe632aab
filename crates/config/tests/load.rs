//! Loading the shipped fixtures and reporting every problem of bad configurations.

use std::path::{Path, PathBuf};

use rustmq_etl_config::{Config, ErrorHandlingStrategy, Format, Severity};

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../fixtures")
}

#[test]
fn design_examples_load_unchanged_in_json_and_yaml() {
    let json = Config::load(&fixtures().join("pipelines")).unwrap();
    let yaml = Config::load(&fixtures().join("pipelines-yaml")).unwrap();
    assert_eq!(json.config.file_count(), 2);
    let ids: Vec<_> = json
        .config
        .pipelines()
        .iter()
        .map(|p| p.pipeline.pipeline_id.as_str())
        .collect();
    // Directory order is file-name order.
    assert_eq!(
        ids,
        ["iot-sensor-processing", "message-enrichment-pipeline"]
    );
    let strip = |c: &Config| {
        c.pipelines()
            .iter()
            .map(|p| p.pipeline.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&json.config), strip(&yaml.config));

    let iot = &json.config.pipelines()[0].pipeline;
    assert_eq!(iot.error_handling, ErrorHandlingStrategy::RetryWithBackoff);
    assert!(!iot.stages[0].continue_on_error, "documented default");
    assert_eq!(
        iot.stages[1].modules[0].instance_config.memory_limit_bytes,
        64 << 20
    );

    // The Exact "*" filter of the first example is legal but surprising.
    let warnings: Vec<String> = json.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains(
        "pipeline \"message-enrichment-pipeline\", stage 2, module \"message-formatter\", field `topic_filters[0].pattern`"
    ));
    assert!(warnings[0].contains("matches only a topic literally named \"*\""));
}

#[test]
fn every_problem_is_reported_at_once() {
    let file = fixtures().join("config-invalid/many-problems.yaml");
    let err = Config::load(&file).unwrap_err();
    let text: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "no diagnostic contains {needle:?} in {text:#?}"
        )
    };
    has("many-problems.yaml: pipeline \"dup\", stage 0, module \"a\", field `instance_config.memroy_limit_bytes`: unknown field `memroy_limit_bytes`; did you mean `memory_limit_bytes`?");
    has("field `instance_config.memory_limit_bytes`: 1024 bytes is less than one 64 KiB WebAssembly page");
    has("field `instance_config.execution_timeout_ms`: a timeout of 0 ms lets nothing run");
    has("field `instance_config.max_concurrent_instances`: must be at least 1");
    has("field `topic_filters[0].pattern`: invalid regex \"(unclosed\": unclosed group");
    has("field `topic_filters[1].pattern`: invalid wildcard");
    has("warning: ");
    has("field `conditional_rules[0]`: invalid field path \"$..x\"");
    has("field `conditional_rules[1]`: the Matches operator needs a regex string");
    has("can never be true");
    has("module \"a\", field `module_id`: the module is listed in this stage already (module #2)");
    has("stage 0, field `priority`: the pipeline's 1st and 2nd stages (in the file's order) share priority 0");
    has("stage 0, field `modules`: the stage has no modules");
    has("pipeline \"dup\", field `pipeline_id`: duplicate pipeline id: the 2nd pipeline has the id of the 1st one");
    has("field `global_timeout_ms`: a timeout of 0 ms lets nothing run");
    has("field `stages`: the pipeline has no stages");
    has("module \"../escape\", field `module_id`: \"../escape\" is not a valid module id");
    assert_eq!(err.errors().count(), 14, "{text:#?}");
    assert!(err
        .diagnostics()
        .iter()
        .all(|d| d.file.as_deref() == Some(file.as_path())));
    assert!(err
        .to_string()
        .starts_with("invalid configuration (14 errors)"));
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    let err = Config::from_text(
        "pipeline_id: p\nstages:\n  - priority: high\n",
        Format::Yaml,
        Some(Path::new("p.yaml")),
    )
    .unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.line_column, Some((3, 15)));
    assert_eq!(
        d.to_string(),
        "error: p.yaml:3:15: stages[0].priority: invalid type: string \"high\", expected u32"
    );

    let err =
        Config::from_text(r#"{"pipeline_id": "p", "stages": [}"#, Format::Json, None).unwrap_err();
    assert_eq!(err.diagnostics()[0].line_column, Some((1, 33)));
    // Text without a file name still says where.
    assert!(
        err.diagnostics()[0]
            .to_string()
            .starts_with("error: line 1, column 33: "),
        "{}",
        err.diagnostics()[0]
    );

    let err = Config::from_text(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m, topic_filters: [{filter_type: Glob, pattern: x}]}]}]",
        Format::Yaml,
        None,
    )
    .unwrap_err();
    assert!(
        err.diagnostics()[0]
            .message
            .contains("unknown variant `Glob`, expected one of"),
        "{err}"
    );
}

/// A key given twice in a `custom_config` object (the readers would keep
/// the last) is an error naming the key, the field and the place, in both
/// formats.
#[test]
fn a_key_twice_in_a_custom_config_is_an_error_with_its_place() {
    let yaml = "\
pipeline_id: p
stages:
  - priority: 0
    modules:
      - module_id: m
        instance_config:
          custom_config: {rates: {eur: 1, usd: 2, eur: 3}}
";
    let json = r#"{"pipeline_id": "p", "stages": [{"priority": 0, "modules": [
        {"module_id": "m", "instance_config": {"custom_config": {"rates": {"eur": 1, "usd": 2, "eur": 3}}}}]}]}"#;
    for (text, format, line) in [(yaml, Format::Yaml, 7), (json, Format::Json, 2)] {
        let err = Config::from_text(text, format, None).unwrap_err();
        let d = &err.diagnostics()[0];
        assert!(
            d.message
                .starts_with("stages[0].modules[0].instance_config.custom_config")
                && d.message
                    .ends_with("the key `eur` is given twice in one object"),
            "{format:?}: {err}"
        );
        assert_eq!(d.line_column.map(|l| l.0), Some(line), "{format:?}: {err}");
    }
}

/// A wrong type does not hide the next: every field of the wrong type and
/// every missing one is listed, in both formats; the one the reader stopped
/// at keeps its line and column.
#[test]
fn every_type_error_is_reported_at_once() {
    let yaml = "\
pipelines:
  - pipeline_id: a
    stages: [{priority: 0, modules: [{module_id: m}]}]
  - pipeline_id: b
    error_handling: SendToDeadLeter
    max_retries: three
    stages:
      - priority: 0
        stage_timeout_ms: -5
        modules:
          - module_id: m
            instance_config: {memory_limit_bytes: lots, custom_config: [1]}
            topic_filters: [{filter_type: Glob, pattern: x}, {pattern: y}]
            conditional_rules: [{condition_type: PayloadField, operator: Equal, value: 1}]
      - priority: high
        modules: [{module_idd: x}]
      - modules: oops
";
    // The one the reader stopped at first, then the others in the model's
    // order.
    let expected = [
        "pipelines[1].error_handling: unknown variant `SendToDeadLeter`",
        "pipelines[1].max_retries: invalid type: string \"three\", expected u32",
        "pipelines[1].stages[0].stage_timeout_ms: invalid value: integer `-5`, expected u64",
        "pipelines[1].stages[0].modules[0].instance_config.memory_limit_bytes: invalid type: string \"lots\", expected usize",
        "pipelines[1].stages[0].modules[0].topic_filters[0].filter_type: unknown variant `Glob`",
        "pipelines[1].stages[0].modules[0].topic_filters[1]: missing field `filter_type`",
        "pipelines[1].stages[0].modules[0].conditional_rules[0].operator: unknown variant `Equal`",
        "pipelines[1].stages[1].priority: invalid type: string \"high\", expected u32",
        "pipelines[1].stages[1].modules[0]: missing field `module_id`",
        "pipelines[1].stages[2]: missing field `priority`",
        "pipelines[1].stages[2].modules: invalid type: string \"oops\", expected a sequence",
    ];
    let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let json = serde_json::to_string_pretty(&value).unwrap();
    for (text, format) in [(yaml.to_owned(), Format::Yaml), (json, Format::Json)] {
        let err = Config::from_text(&text, format, None).unwrap_err();
        let messages: Vec<&str> = err
            .diagnostics()
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(messages.len(), expected.len(), "{format:?}: {messages:#?}");
        for (message, expected) in messages.iter().zip(expected) {
            assert!(
                message.starts_with(expected),
                "{format:?}: {message} / {expected}"
            );
        }
        // The reader stopped at the strategy (the first wrong field in the
        // text): it alone has a place in the text.
        let placed: Vec<bool> = err
            .diagnostics()
            .iter()
            .map(|d| d.line_column.is_some())
            .collect();
        assert!(placed[0], "{format:?}");
        assert!(!placed[1..].contains(&true), "{format:?}");
    }
}

/// Whatever the first wrong value is, every type error is reported, in YAML
/// as in JSON (serde_yaml words some errors otherwise than the per-field
/// check: only the first was reported for these). (A YAML number past every
/// JSON number stops the reading of the document itself: that error alone
/// is reported, naming its field and place.)
#[test]
fn every_type_error_is_reported_whatever_the_first_one() {
    for first in [
        "global_timeout_ms: -5",
        "global_timeout_ms: null",
        "error_handling: 5",
        "global_timeout_ms: 1.5",
        "global_timeout_ms: text",
    ] {
        let yaml = format!(
            "pipeline_id: p\n{first}\nmax_retries: \"three\"\nstages:\n  - priority: high\n    modules: [{{module_id: m}}]\n"
        );
        let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let json = serde_json::to_string(&value).unwrap();
        for (text, format) in [(yaml.as_str(), Format::Yaml), (json.as_str(), Format::Json)] {
            let err = Config::from_text(text, format, None).unwrap_err();
            let messages: Vec<&str> = err
                .diagnostics()
                .iter()
                .map(|d| d.message.as_str())
                .collect();
            assert_eq!(messages.len(), 3, "{first} ({format:?}): {messages:#?}");
            let field = first.split(':').next().unwrap();
            assert!(
                messages[0].starts_with(field),
                "{first} ({format:?}): {messages:#?}"
            );
            assert!(
                err.diagnostics()[0].line_column.is_some(),
                "{first} ({format:?})"
            );
        }
    }
}

/// YAML reads any scalar as a string (`pipeline_id: 2024` is "2024"): such
/// fields are not type errors when another field is one.
#[test]
fn yaml_scalars_that_read_as_strings_are_not_listed() {
    let yaml = "pipeline_id: 2024\nname: null\nstages:\n  - priority: high\n    modules:\n      - module_id: 42\n        topic_filters: [{filter_type: Exact, pattern: 404}]\n";
    let err = Config::from_text(yaml, Format::Yaml, None).unwrap_err();
    let messages: Vec<&str> = err
        .diagnostics()
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        ["stages[0].priority: invalid type: string \"high\", expected u32"]
    );
    // Fixed, it loads with those strings.
    let loaded = Config::from_text(&yaml.replace("high", "0"), Format::Yaml, None).unwrap();
    let pipeline = &loaded.config.pipelines()[0].pipeline;
    assert_eq!(
        (pipeline.pipeline_id.as_str(), pipeline.name.as_str()),
        ("2024", "null")
    );
    assert_eq!(pipeline.stages[0].modules[0].module_id, "42");
}

/// Two fields with the same error text: the line and column go to the one
/// the reader stopped at (the first in the text), found by its path.
#[test]
fn the_place_goes_to_the_field_the_reader_stopped_at() {
    let json =
        r#"{"pipeline_id": "p", "stages": [{"priority": "x", "modules": []}], "max_retries": "x"}"#;
    let err = Config::from_text(json, Format::Json, None).unwrap_err();
    let placed: Vec<(&str, bool)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.message.as_str(), d.line_column.is_some()))
        .collect();
    assert_eq!(
        placed,
        [
            (
                "stages[0].priority: invalid type: string \"x\", expected u32",
                true
            ),
            (
                "max_retries: invalid type: string \"x\", expected u32",
                false
            ),
        ]
    );
    assert_eq!(err.diagnostics()[0].line_column, Some((1, 48)));
}

#[test]
fn unknown_top_level_fields_and_empty_files() {
    let err = Config::from_text("pipelines: []\nversion: 2\n", Format::Yaml, None).unwrap_err();
    assert!(err.to_string().contains(
        "unknown field `version`; a file with a `pipelines` list has no other top-level field"
    ));
    let err = Config::from_text("", Format::Yaml, None).unwrap_err();
    assert!(err.to_string().contains("the file is empty"));
    let loaded = Config::from_text("pipelines: []", Format::Yaml, None).unwrap();
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
    assert!(loaded.warnings[0].message.contains("defines no pipelines"));
}

/// Aliases that expand too far (a "billion laughs": here serde_yaml's
/// limit stops it while skipping the unknown top-level keys, before the
/// `custom_config` that refers to them) are refused at once, in words that
/// say what to change.
#[test]
fn yaml_aliases_that_expand_too_far_are_refused() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let below = format!("*a{}", level - 1);
        yaml += &format!("a{level}: &a{level} [{}]\n", vec![below; 10].join(", "));
    }
    yaml += "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m, instance_config: {custom_config: *a8}}]}]\n";
    let err = Config::from_text(&yaml, Format::Yaml, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("its aliases (`*name`) expand to too many values"),
        "{err}"
    );
}

#[test]
fn a_path_that_is_not_there_is_said_to_be_missing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pipeline", "pipeline.yaml"] {
        let path = dir.path().join(name);
        let err = Config::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cannot read the configuration: No such file or directory"),
            "{text}"
        );
        assert!(!text.contains("unknown configuration format"), "{text}");
        assert_eq!(err.diagnostics()[0].file.as_deref(), Some(path.as_path()));
    }
}

#[test]
fn a_directory_applies_files_in_name_order_and_ignores_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let one = |id: &str| {
        format!("{{pipeline_id: {id}, stages: [{{priority: 0, modules: [{{module_id: m}}]}}]}}")
    };
    std::fs::write(dir.path().join("20-b.yml"), one("b")).unwrap();
    std::fs::write(
        dir.path().join("10-a.yaml"),
        format!("pipelines:\n  - {}\n  - {}\n", one("a1"), one("a2")),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "notes").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not: [valid").unwrap();
    // A directory below is not read (a warning says so); a hidden one, as
    // Kubernetes' `..data` of a mounted ConfigMap, not even that.
    std::fs::create_dir_all(dir.path().join("more")).unwrap();
    std::fs::write(dir.path().join("more/c.yaml"), one("c")).unwrap();
    std::fs::create_dir_all(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/b.yml"), one("b")).unwrap();
    let loaded = Config::load(dir.path()).unwrap();
    let ids: Vec<_> = loaded
        .config
        .pipelines()
        .iter()
        .map(|p| p.pipeline.pipeline_id.as_str())
        .collect();
    assert_eq!(ids, ["a1", "a2", "b"]);
    assert_eq!(
        loaded.config.pipelines()[0].pipeline.name,
        "a1",
        "name defaults to the id"
    );
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("README.md: ignored: not a .yaml"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("more: ignored: a directory"),
        "{warnings:?}"
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(Config::load(empty.path())
        .unwrap_err()
        .to_string()
        .contains("no .yaml, .yml or .json"));
}

/// Two pipelines with one id are named by their places, in one file or in two.
#[test]
fn a_duplicate_pipeline_id_names_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let one = |id: &str| {
        format!("{{pipeline_id: {id}, stages: [{{priority: 0, modules: [{{module_id: m}}]}}]}}")
    };
    let list = |ids: &[&str]| {
        let items: Vec<String> = ids.iter().map(|id| format!("  - {}\n", one(id))).collect();
        format!("pipelines:\n{}", items.concat())
    };
    std::fs::write(dir.path().join("a.yaml"), list(&["x", "y", "z"])).unwrap();
    // `w` three times: each after the first is named against the first.
    std::fs::write(dir.path().join("b.yaml"), list(&["w", "w", "y", "w"])).unwrap();
    let err = Config::load(dir.path()).unwrap_err();
    let text: Vec<String> = err.errors().map(ToString::to_string).collect();
    let a = dir.path().join("a.yaml");
    assert_eq!(
        text,
        [
            format!(
                "error: {}: pipeline \"w\", field `pipeline_id`: duplicate pipeline id: the 2nd pipeline has the id of the 1st one",
                dir.path().join("b.yaml").display()
            ),
            format!(
                "error: {}: pipeline \"y\", field `pipeline_id`: duplicate pipeline id: the 3rd pipeline of this file has the id of the 2nd pipeline of {}",
                dir.path().join("b.yaml").display(),
                a.display()
            ),
            format!(
                "error: {}: pipeline \"w\", field `pipeline_id`: duplicate pipeline id: the 4th pipeline has the id of the 1st one",
                dir.path().join("b.yaml").display()
            ),
        ]
    );
}

/// A call timeout longer than its pipeline's global timeout never fires: a
/// warning, but not for one left at its default (a pipeline with a global
/// timeout under a second would warn of every module).
#[test]
fn a_call_timeout_past_the_pipelines_is_a_warning_unless_it_is_the_default() {
    let yaml =
        "pipeline_id: p\nglobal_timeout_ms: 500\nstages:\n  - priority: 0\n    modules:\n      \
                - module_id: set\n        instance_config: {execution_timeout_ms: 800}\n      \
                - module_id: default\n";
    let loaded = Config::from_text(yaml, Format::Yaml, None).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains(r#"module "set""#)
            && warnings[0].contains(
                "the call timeout (800 ms) exceeds the pipeline's global timeout (500 ms)"
            ),
        "{warnings:#?}"
    );
}

/// The same against a stage timeout tighter than the pipeline's.
#[test]
fn a_call_timeout_past_its_stages_is_a_warning_too() {
    let yaml =
        "pipeline_id: p\nstages:\n  - priority: 0\n    stage_timeout_ms: 10\n    modules:\n      \
                - module_id: slow\n        instance_config: {execution_timeout_ms: 2000}\n";
    let loaded = Config::from_text(yaml, Format::Yaml, None).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains(r#"module "slow""#)
            && warnings[0]
                .contains("the call timeout (2000 ms) exceeds the stage timeout (10 ms), which ends the call first"),
        "{warnings:#?}"
    );
    // A bound of 0 (stage or pipeline) is an error of its own, not warned of
    // again.
    for timeouts in ["stage_timeout_ms: 0", "global_timeout_ms: 0"] {
        let (stage, global) = if timeouts.starts_with("stage") {
            (timeouts, "")
        } else {
            ("", timeouts)
        };
        let yaml = format!(
            "pipeline_id: p\n{global}\nstages:\n  - priority: 0\n    {stage}\n    modules:\n      \
             - module_id: slow\n        instance_config: {{execution_timeout_ms: 2000}}\n"
        );
        let error = Config::from_text(&yaml, Format::Yaml, None).unwrap_err();
        let said: Vec<String> = error
            .diagnostics()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(
            said[0].contains("a timeout of 0 ms lets nothing run"),
            "{said:#?}"
        );
    }
}

/// A UTF-8 byte-order mark at a file's start (some Windows editors write
/// one) is not read as text, in either format.
#[test]
fn a_byte_order_mark_is_not_text() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "a.json",
            r#"{"pipeline_id": "a", "stages": [{"priority": 0, "modules": [{"module_id": "m"}]}]}"#,
        ),
        (
            "b.yaml",
            "pipeline_id: b\nstages: [{priority: 0, modules: [{module_id: m}]}]\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("\u{feff}{text}")).unwrap();
        let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.config.pipelines().len(), 1, "{name}");
    }
}

#[test]
fn the_canonical_json_is_the_same_for_the_same_pipelines_and_differs_for_any_change() {
    let json = Config::load(&fixtures().join("pipelines")).unwrap().config;
    let yaml = Config::load(&fixtures().join("pipelines-yaml"))
        .unwrap()
        .config;
    // Two directories, two formats: the same pipelines.
    assert_eq!(json.canonical_json(), yaml.canonical_json());
    let text = |custom: &str, timeout: u64| {
        format!(
            "pipeline_id: p\nglobal_timeout_ms: {timeout}\nstages: [{{priority: 0, modules: \
             [{{module_id: m, instance_config: {{custom_config: {custom}}}}}]}}]"
        )
    };
    let load = |text: &str| {
        Config::from_text(text, Format::Yaml, None)
            .unwrap()
            .config
            .canonical_json()
    };
    let one = load(&text("{a: 1, b: {c: 2, d: 3}}", 100));
    // The keys of a value in another order, at any depth: the same.
    assert_eq!(one, load(&text("{b: {d: 3, c: 2}, a: 1}", 100)));
    // A default left out or written out: the same.
    let defaults = Config::from_text(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
        Format::Yaml,
        None,
    )
    .unwrap()
    .config;
    let written = Config::from_text("pipeline_id: p\nenabled: true\nstages: [{priority: 0, parallel_execution: false, modules: [{module_id: m}]}]", Format::Yaml, None).unwrap().config;
    assert_eq!(defaults.canonical_json(), written.canonical_json());
    // A value, a limit, a pipeline switched off: each reads otherwise.
    assert_ne!(one, load(&text("{a: 2, b: {c: 2, d: 3}}", 100)));
    assert_ne!(one, load(&text("{a: 1, b: {c: 2, d: 3}}", 101)));
    let off = Config::from_text(&text("{a: 1, b: {c: 2, d: 3}}", 100), Format::Yaml, None)
        .unwrap()
        .config
        .with_pipeline_enabled("p", false)
        .unwrap();
    assert_ne!(one, off.canonical_json());
    // One line of JSON.
    assert!(!one.contains('\n'));
    serde_json::from_str::<serde_json::Value>(&one).unwrap();
}

/// Every default of configuration.md's tables, as the numbers it states (not
/// the constants the code takes them from): a pipeline that leaves every
/// optional field out reads as one that writes each out.
#[test]
fn every_documented_default_is_the_one_filled_in() {
    let bare = Config::from_text(
        "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m, \
         topic_filters: [{filter_type: Exact, pattern: t}], \
         conditional_rules: [{condition_type: MessageSize, operator: LessThan, value: 10}]}]}]",
        Format::Yaml,
        None,
    )
    .unwrap()
    .config;
    let p = &bare.pipelines()[0].pipeline;
    assert_eq!(p.name, "p", "name: the pipeline_id");
    assert_eq!(p.description, None);
    assert!(p.enabled);
    assert_eq!(p.global_timeout_ms, 5000);
    assert_eq!(p.max_retries, 3);
    assert_eq!(
        p.error_handling,
        rustmq_etl_config::ErrorHandlingStrategy::StopPipeline
    );
    let stage = &p.stages[0];
    assert!(!stage.parallel_execution);
    assert_eq!(stage.stage_timeout_ms, None);
    assert!(!stage.continue_on_error);
    let module = &stage.modules[0];
    let instance = &module.instance_config;
    assert_eq!(instance.memory_limit_bytes, 67_108_864);
    assert_eq!(instance.execution_timeout_ms, 1000);
    assert_eq!(instance.max_concurrent_instances, 10);
    assert!(instance.enable_caching);
    assert_eq!(instance.cache_ttl_seconds, 300);
    assert_eq!(instance.custom_config, serde_json::Value::Null);
    let filter = &module.topic_filters[0];
    assert!(filter.case_sensitive);
    assert!(!filter.negate);
    let rule = &module.conditional_rules[0];
    assert_eq!(rule.field_path, "");
    assert!(!rule.negate);
    // Written out, the same configuration.
    let written = Config::from_text(
        "pipeline_id: p\nname: p\nenabled: true\nglobal_timeout_ms: 5000\nmax_retries: 3\n\
         error_handling: StopPipeline\nstages: [{priority: 0, parallel_execution: false, \
         continue_on_error: false, modules: [{module_id: m, instance_config: \
         {memory_limit_bytes: 67108864, execution_timeout_ms: 1000, max_concurrent_instances: 10, \
         enable_caching: true, cache_ttl_seconds: 300, custom_config: null}, \
         topic_filters: [{filter_type: Exact, pattern: t, case_sensitive: true, negate: false}], \
         conditional_rules: [{condition_type: MessageSize, field_path: '', operator: LessThan, \
         value: 10, negate: false}]}]}]",
        Format::Yaml,
        None,
    )
    .unwrap()
    .config;
    assert_eq!(bare.canonical_json(), written.canonical_json());
}

/// The warnings configuration.md lists, each raised where it is meant: the
/// configuration loads, with exactly these.
#[test]
fn each_documented_warning_is_raised_and_only_a_warning() {
    let yaml = r#"
pipeline_id: p
global_timeout_ms: 100
stages:
  - priority: 0
    stage_timeout_ms: 200
    modules:
      - module_id: m
        instance_config: {cache_ttl_seconds: 0}
        topic_filters:
          - {filter_type: Exact, pattern: "orders.*"}
          - {filter_type: Prefix, pattern: ""}
        conditional_rules:
          - {condition_type: MessageSize, field_path: x, operator: LessThan, value: 10}
          - {condition_type: HeaderValue, field_path: h, operator: NotEquals, value: a, negate: true}
"#;
    let loaded = Config::from_text(yaml, Format::Yaml, None).unwrap();
    let messages: Vec<(String, String)> = loaded
        .warnings
        .iter()
        .map(|w| (w.field.clone().unwrap_or_default(), w.message.clone()))
        .collect();
    for (field, says) in [
        ("stage_timeout_ms", "exceeds the pipeline's global timeout"),
        ("instance_config.cache_ttl_seconds", "time-to-live of 0"),
        ("topic_filters[0]", "is not a wildcard"),
        ("topic_filters[1]", "an empty pattern matches every topic"),
        ("conditional_rules[0].field_path", "ignore `field_path`"),
        ("conditional_rules[1]", "negated NotEquals"),
    ] {
        assert!(
            messages
                .iter()
                .any(|(f, m)| f.contains(field) && m.contains(says)),
            "no warning at {field} saying {says:?} in {messages:#?}"
        );
    }
    assert_eq!(messages.len(), 6, "{messages:#?}");
}

/// Limits hold at their ends: each at its most loads; one past it, and an
/// empty pipeline or module id or a module id that would name a hidden file,
/// is an error, every one reported at once.
#[test]
fn limits_hold_at_their_ends_and_ids_must_name_something() {
    let pipeline = |global: u64, retries: u32, memory: u64, instances: u32, id: &str| {
        format!(
            "pipeline_id: \"{id}\"\nglobal_timeout_ms: {global}\nmax_retries: {retries}\n\
             stages: [{{priority: 0, modules: [{{module_id: m, instance_config: \
             {{memory_limit_bytes: {memory}, max_concurrent_instances: {instances}, \
             execution_timeout_ms: {global}}}}}]}}]\n"
        )
    };
    let most = pipeline(3_600_000, 100, 4 << 30, 10_000, "p");
    Config::from_text(&most, Format::Yaml, None).unwrap_or_else(|e| panic!("{e}"));
    let least = pipeline(1, 0, 64 << 10, 1, "p");
    Config::from_text(&least, Format::Yaml, None).unwrap_or_else(|e| panic!("{e}"));
    let past = pipeline(3_600_001, 101, (4 << 30) + 1, 10_001, "p");
    let err = Config::from_text(&past, Format::Yaml, None).unwrap_err();
    let fields: Vec<String> = err
        .errors()
        .map(|d| d.field.clone().unwrap_or_default())
        .collect();
    for field in [
        "global_timeout_ms",
        "max_retries",
        "instance_config.memory_limit_bytes",
        "instance_config.max_concurrent_instances",
        "instance_config.execution_timeout_ms",
    ] {
        assert!(fields.iter().any(|f| f.ends_with(field)), "{field}: {err}");
    }
    assert_eq!(fields.len(), 5, "{err}");
    let below = pipeline(1, 0, (64 << 10) - 1, 1, "p");
    let err = Config::from_text(&below, Format::Yaml, None).unwrap_err();
    assert_eq!(err.errors().count(), 1, "{err}");
    // Ids: an empty pipeline id (named by its place), an empty module id, one
    // starting with a dot.
    let ids = "pipelines:\n  - pipeline_id: \"\"\n    stages: [{priority: 0, modules: [{module_id: \"\"}]}]\n  \
               - pipeline_id: q\n    stages: [{priority: 0, modules: [{module_id: .hidden}]}]\n";
    let err = Config::from_text(ids, Format::Yaml, None).unwrap_err();
    let errors: Vec<String> = err.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors.iter().any(|e| e.contains("pipeline \"#1\"")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.contains(".hidden")), "{errors:#?}");
    // An unknown field in a pipeline without an id: named by its place too,
    // in a list and alone.
    let unknown = "pipelines:\n  - pipeline_id: q\n    stages: [{priority: 0, modules: [{module_id: m}]}]\n  \
                   - pipeline_id: \"\"\n    stages: [{priority: 0, modules: [{module_id: m, colour: red}]}]\n";
    let err = Config::from_text(unknown, Format::Yaml, None).unwrap_err();
    let errors: Vec<String> = err.errors().map(ToString::to_string).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("pipeline \"#2\"") && e.contains("colour")),
        "{errors:#?}"
    );
    let alone = "pipeline_id: \"\"\nstages: [{priority: 0, modules: [{module_id: m}]}]\nextra: 1\n";
    let err = Config::from_text(alone, Format::Yaml, None).unwrap_err();
    let errors: Vec<String> = err.errors().map(ToString::to_string).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("pipeline \"#1\"") && e.contains("extra")),
        "{errors:#?}"
    );
}

/// Many files, written in an order that is not their names' (the order a
/// directory lists them in is the file system's): applied in name order.
#[test]
fn many_files_apply_in_name_order_whatever_order_they_were_written_in() {
    let dir = tempfile::tempdir().unwrap();
    // 20 names, written in a shuffled order (a fixed one: 7 is prime to 20).
    for n in (0..20).map(|i| (i * 7) % 20) {
        std::fs::write(
            dir.path().join(format!("{n:02}.yaml")),
            format!(
                "{{pipeline_id: p{n:02}, stages: [{{priority: 0, modules: [{{module_id: m}}]}}]}}"
            ),
        )
        .unwrap();
    }
    let loaded = Config::load(dir.path()).unwrap();
    let ids: Vec<&str> = loaded
        .config
        .pipelines()
        .iter()
        .map(|p| p.pipeline.pipeline_id.as_str())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("p{n:02}")).collect();
    assert_eq!(ids, expected);
}

/// The problems of every file of a directory are reported together, each
/// naming its file: a type error in one does not hide another's duplicate
/// priority.
#[test]
fn every_file_s_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "pipeline_id: a\nmax_retries: many\nstages: [{priority: 0, modules: [{module_id: m}]}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "pipeline_id: b\nstages: [{priority: 1, modules: [{module_id: m}]}, {priority: 1, modules: [{module_id: n}]}]\n",
    )
    .unwrap();
    let err = Config::load(dir.path()).unwrap_err();
    let errors: Vec<String> = err.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a.yaml") && e.contains("max_retries")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("b.yaml") && e.contains("priority")),
        "{errors:#?}"
    );
}

/// A misspelt field is placed and a known name suggested at every level:
/// the pipeline's, a stage's, a filter's and a rule's.
#[test]
fn a_misspelt_field_is_placed_and_the_right_one_suggested_at_every_level() {
    let yaml = r#"
pipeline_id: p
globl_timeout_ms: 100
stages:
  - priority: 2
    paralel_execution: true
    modules:
      - module_id: m
        topic_filters: [{filter_type: Exact, pattern: t, case_sensitve: false}]
        conditional_rules: [{condition_type: MessageSize, operator: LessThan, value: 9, negat: true}]
"#;
    let err = Config::from_text(yaml, Format::Yaml, None).unwrap_err();
    let errors: Vec<String> = err.errors().map(ToString::to_string).collect();
    for (place, suggestion) in [
        (
            "pipeline \"p\", field `globl_timeout_ms`",
            "did you mean `global_timeout_ms`?",
        ),
        (
            "pipeline \"p\", stage 2, field `paralel_execution`",
            "did you mean `parallel_execution`?",
        ),
        (
            "pipeline \"p\", stage 2, module \"m\", field `topic_filters[0].case_sensitve`",
            "did you mean `case_sensitive`?",
        ),
        (
            "pipeline \"p\", stage 2, module \"m\", field `conditional_rules[0].negat`",
            "did you mean `negate`?",
        ),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(place) && e.contains(suggestion)),
            "no {place} … {suggestion} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

/// A key twice in one object of a rule's `value` is an error, as in
/// `custom_config`: which of the two was meant cannot be told.
#[test]
fn a_key_twice_in_a_rule_s_value_is_an_error() {
    let yaml = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m, conditional_rules: \
                [{condition_type: PayloadField, field_path: x, operator: Equals, value: {a: 1, a: 2}}]}]}]\n";
    let err = Config::from_text(yaml, Format::Yaml, None).unwrap_err();
    assert_eq!(err.errors().count(), 1, "{err}");
    let json = r#"{"pipeline_id": "p", "stages": [{"priority": 0, "modules": [{"module_id": "m", "conditional_rules": [{"condition_type": "PayloadField", "field_path": "x", "operator": "Equals", "value": {"a": 1, "a": 2}}]}]}]}"#;
    let err = Config::from_text(json, Format::Json, None).unwrap_err();
    assert_eq!(err.errors().count(), 1, "{err}");
}
