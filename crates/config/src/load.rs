//! Loading a configuration from text, a file or a directory of files.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::diagnostic::{ConfigError, Diagnostic, Severity};
use crate::model::EtlPipelineConfig;
use crate::validate::validate;

/// The syntax of a configuration file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl Format {
    /// The format a file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// One pipeline and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSource {
    /// The file, when the configuration was loaded from one.
    pub file: Option<PathBuf>,
    /// The pipeline, defaults filled in.
    pub pipeline: EtlPipelineConfig,
}

/// A validated configuration: pipelines in execution order (by file name, then
/// position in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pipelines: Vec<PipelineSource>,
    files: usize,
}

/// A configuration that loaded, with the warnings it raised.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things that work but are probably not meant.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Deserialize)]
struct PipelinesFile {
    pipelines: Vec<EtlPipelineConfig>,
}

impl Config {
    /// Loads a configuration file, or every `.yaml`, `.yml` and `.json` file of a
    /// directory in file-name order, and validates it all.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let mut diagnostics = Vec::new();
        let files = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => list_directory(path, &mut diagnostics)?,
            Ok(_) => vec![path.to_owned()],
            Err(e) => {
                return Err(ConfigError::new(vec![Diagnostic {
                    file: Some(path.to_owned()),
                    ..Diagnostic::new(
                        Severity::Error,
                        format!(
                            "cannot read the configuration: {e} (give a .yaml, .yml or .json \
                             file, or a directory of them)"
                        ),
                    )
                }]))
            }
        };
        let mut pipelines = Vec::new();
        for file in &files {
            let at_file = |message: String| Diagnostic {
                file: Some(file.clone()),
                ..Diagnostic::new(Severity::Error, message)
            };
            let Some(format) = Format::from_path(file) else {
                diagnostics.push(at_file(
                    "unknown configuration format: the file name must end in .yaml, .yml or .json"
                        .into(),
                ));
                continue;
            };
            match fs::read_to_string(file) {
                Ok(text) => pipelines.extend(parse(&text, format, Some(file), &mut diagnostics)),
                Err(e) => diagnostics.push(at_file(format!("cannot read the file: {e}"))),
            }
        }
        finish(pipelines, files.len(), diagnostics)
    }

    /// Parses and validates one configuration text; `file` names it in diagnostics.
    pub fn from_text(
        text: &str,
        format: Format,
        file: Option<&Path>,
    ) -> Result<Loaded, ConfigError> {
        let mut diagnostics = Vec::new();
        let pipelines = parse(text, format, file, &mut diagnostics);
        finish(pipelines, 1, diagnostics)
    }

    /// The pipelines, in the order they apply.
    pub fn pipelines(&self) -> &[PipelineSource] {
        &self.pipelines
    }

    /// The pipelines in order as one line of JSON: defaults filled in, the
    /// keys of every object sorted (however a file ordered them), the files
    /// they came from left out. Two loads of the same pipelines read the
    /// same, from one file or many, in YAML or JSON; any change that can
    /// change a result reads otherwise. For a digest of what a run ran with
    /// (`rustmq-etl run --checkpoint`).
    pub fn canonical_json(&self) -> String {
        let pipelines: Vec<_> = self.pipelines.iter().map(|p| &p.pipeline).collect();
        // (The model's maps have text keys: it serialises.)
        let value = serde_json::to_value(pipelines).expect("a configuration serialises");
        crate::model::sorted_keys(&value).to_string()
    }

    /// How many files the configuration was read from.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// The same configuration with pipeline `pipeline_id` switched on or off
    /// (`enabled` needs no validation); `None` if there is no such pipeline.
    pub fn with_pipeline_enabled(&self, pipeline_id: &str, enabled: bool) -> Option<Config> {
        let mut changed = self.clone();
        let mut found = false;
        for source in &mut changed.pipelines {
            if source.pipeline.pipeline_id == pipeline_id {
                source.pipeline.enabled = enabled;
                found = true;
            }
        }
        found.then_some(changed)
    }
}

fn finish(
    pipelines: Vec<PipelineSource>,
    files: usize,
    mut diagnostics: Vec<Diagnostic>,
) -> Result<Loaded, ConfigError> {
    diagnostics.extend(validate(&pipelines));
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(ConfigError::new(diagnostics));
    }
    Ok(Loaded {
        config: Config { pipelines, files },
        warnings: diagnostics,
    })
}

fn list_directory(
    dir: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let fail = |message: String| {
        ConfigError::new(vec![Diagnostic {
            file: Some(dir.to_owned()),
            ..Diagnostic::new(Severity::Error, message)
        }])
    };
    let entries = fs::read_dir(dir).map_err(|e| fail(format!("cannot read the directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| fail(format!("cannot read the directory: {e}")))?
            .path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            diagnostics.push(Diagnostic {
                file: Some(path),
                ..Diagnostic::new(
                    Severity::Warning,
                    "ignored: a directory (the configuration files are those in the directory \
                     given, not below it)",
                )
            });
            continue;
        }
        if Format::from_path(&path).is_some() {
            files.push(path);
        } else {
            diagnostics.push(Diagnostic {
                file: Some(path),
                ..Diagnostic::new(
                    Severity::Warning,
                    "ignored: not a .yaml, .yml or .json file",
                )
            });
        }
    }
    if files.is_empty() {
        return Err(fail(
            "no .yaml, .yml or .json configuration file in the directory".into(),
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Parses one file's pipelines; problems go to `diagnostics`.
fn parse(
    text: &str,
    format: Format,
    file: Option<&Path>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<PipelineSource> {
    // A UTF-8 byte-order mark (some Windows editors write one) is not text:
    // neither parser takes it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let located = |message: String, line_column: Option<(usize, usize)>| Diagnostic {
        file: file.map(Path::to_owned),
        line_column,
        ..Diagnostic::new(Severity::Error, message)
    };
    // First a look at the shape: one pipeline, or a `pipelines` list?
    let shape = match format {
        Format::Yaml => serde_yaml::from_str::<serde_json::Value>(text).map_err(|e| yaml_error(&e)),
        Format::Json => serde_json::from_str::<serde_json::Value>(text).map_err(|e| json_error(&e)),
    };
    let list_form = match &shape {
        Ok(serde_json::Value::Object(map)) => map.contains_key("pipelines"),
        Ok(serde_json::Value::Null) => {
            diagnostics.push(located(
                "the file is empty; expected a pipeline or a `pipelines` list".into(),
                None,
            ));
            return Vec::new();
        }
        Ok(_) => {
            diagnostics.push(located(
                "expected a pipeline object or an object with a `pipelines` list".into(),
                None,
            ));
            return Vec::new();
        }
        Err((message, at)) => {
            diagnostics.push(located(message.clone(), *at));
            return Vec::new();
        }
    };
    let mut unknown = Vec::new();
    let parsed = if list_form {
        deserialize::<PipelinesFile>(text, format, &mut unknown).map(|f| f.pipelines)
    } else {
        deserialize::<EtlPipelineConfig>(text, format, &mut unknown).map(|p| vec![p])
    };
    let mut pipelines = match parsed {
        Ok(p) => p,
        Err(((message, at), stopped_at)) => {
            // The reading stopped at the first wrong field: every other one
            // is found by reading each on its own. The first, found among
            // them by its path, comes first with its line and column; if it
            // is not among them, it is reported alone, as the reader said it.
            let all = match &shape {
                Ok(document) => {
                    crate::types::type_errors(document, list_form, format == Format::Yaml)
                }
                Err(_) => Vec::new(),
            };
            let text = |(path, error): &(String, String)| match path.as_str() {
                "" => error.clone(),
                path => format!("{path}: {error}"),
            };
            // The first is the one at the field the reading stopped at (a
            // field's value has one type error; serde_yaml words some
            // differently — "invalid type" for "invalid value", "unit value"
            // for "null" — and names the path, serde_json does not); the
            // document itself, by its text.
            let first = all.iter().position(|e| {
                e.0 == stopped_at
                    && (!stopped_at.is_empty() || text(e) == message || e.1 == message)
            });
            let Some(first) = first else {
                // (serde_yaml's text names the field; serde_json's does not.)
                let message = match format {
                    Format::Json if !stopped_at.is_empty() => format!("{stopped_at}: {message}"),
                    _ => message,
                };
                diagnostics.push(located(message, at));
                return Vec::new();
            };
            // With its path (serde_json's own text has none).
            diagnostics.push(located(text(&all[first]), at));
            for (i, error) in all.iter().enumerate() {
                if i != first {
                    diagnostics.push(located(text(error), None));
                }
            }
            return Vec::new();
        }
    };
    for path in unknown {
        diagnostics.push(unknown_field(&path, list_form, &pipelines, file));
    }
    if pipelines.is_empty() {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            ..located("the file defines no pipelines".into(), None)
        });
    }
    for p in &mut pipelines {
        if p.name.is_empty() {
            p.name = p.pipeline_id.clone();
        }
    }
    pipelines
        .into_iter()
        .map(|pipeline| PipelineSource {
            file: file.map(Path::to_owned),
            pipeline,
        })
        .collect()
}

type ParseError = (String, Option<(usize, usize)>);

/// Where the typed reading stopped: the error, and the path of the field it
/// stopped at (`stages[0].priority`; empty: the document itself, or not a
/// field's value at all).
type Stopped = (ParseError, String);

fn deserialize<T: DeserializeOwned>(
    text: &str,
    format: Format,
    unknown: &mut Vec<String>,
) -> Result<T, Stopped> {
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let path = |path: &serde_path_to_error::Path| match path.to_string().as_str() {
        "." => String::new(),
        path => path.to_owned(),
    };
    match format {
        Format::Yaml => serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            serde_yaml::Deserializer::from_str(text),
            &mut record,
        ))
        .map_err(|e| (yaml_error(e.inner()), path(e.path()))),
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
                &mut de,
                &mut record,
            ))
            .map_err(|e| (json_error(e.inner()), path(e.path())))?;
            de.end().map_err(|e| (json_error(&e), String::new()))?;
            Ok(value)
        }
    }
}

fn yaml_error(e: &serde_yaml::Error) -> ParseError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the location is reported apart.
    let message = match message.rfind(" at line ") {
        Some(i) if e.location().is_some() => message[..i].to_owned(),
        _ => message,
    };
    // serde_yaml's guard against aliases that expand too far (a "billion
    // laughs"), in words a user can act on.
    let message = match message.as_str() {
        "repetition limit exceeded" => "its aliases (`*name`) expand to too many values \
             (repetition limit exceeded): write the values out, or refer to fewer"
            .to_owned(),
        _ => message,
    };
    (message, e.location().map(|l| (l.line(), l.column())))
}

fn json_error(e: &serde_json::Error) -> ParseError {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) if e.line() > 0 => message[..i].to_owned(),
        _ => message,
    };
    (message, (e.line() > 0).then(|| (e.line(), e.column())))
}

pub(crate) const PIPELINE_FIELDS: &[&str] = &[
    "pipeline_id",
    "name",
    "description",
    "enabled",
    "stages",
    "global_timeout_ms",
    "max_retries",
    "error_handling",
];
pub(crate) const STAGE_FIELDS: &[&str] = &[
    "priority",
    "modules",
    "parallel_execution",
    "stage_timeout_ms",
    "continue_on_error",
];
pub(crate) const MODULE_FIELDS: &[&str] = &[
    "module_id",
    "instance_config",
    "topic_filters",
    "conditional_rules",
];
pub(crate) const INSTANCE_FIELDS: &[&str] = &[
    "memory_limit_bytes",
    "execution_timeout_ms",
    "max_concurrent_instances",
    "enable_caching",
    "cache_ttl_seconds",
    "custom_config",
];
pub(crate) const FILTER_FIELDS: &[&str] = &["filter_type", "pattern", "case_sensitive", "negate"];
pub(crate) const RULE_FIELDS: &[&str] = &[
    "condition_type",
    "field_path",
    "operator",
    "value",
    "negate",
];

/// An error for an unknown field, placed in its pipeline, stage and module, with
/// the closest known field name as a suggestion.
fn unknown_field(
    path: &str,
    list_form: bool,
    pipelines: &[EtlPipelineConfig],
    file: Option<&Path>,
) -> Diagnostic {
    let mut segments: Vec<&str> = path.split('.').collect();
    let name = segments.pop().unwrap_or_default();
    let mut d = Diagnostic {
        file: file.map(Path::to_owned),
        ..Diagnostic::new(Severity::Error, format!("unknown field `{name}`"))
    };
    let mut rest = &segments[..];
    let pipeline = if list_form {
        if let ["pipelines", index, tail @ ..] = rest {
            rest = tail;
            index
                .parse::<usize>()
                .ok()
                .and_then(|i| Some((i, pipelines.get(i)?)))
        } else {
            d.message
                .push_str("; a file with a `pipelines` list has no other top-level field");
            return d;
        }
    } else {
        pipelines.first().map(|p| (0, p))
    };
    // (Without an id, by its place in its file, as validation names it.)
    d.pipeline = pipeline.map(|(i, p)| {
        if p.pipeline_id.is_empty() {
            format!("#{}", i + 1)
        } else {
            p.pipeline_id.clone()
        }
    });
    let pipeline = pipeline.map(|(_, p)| p);
    let index = |s: &str| s.parse::<usize>().ok();
    let mut candidates = PIPELINE_FIELDS;
    let mut field = Vec::new();
    let mut stage = None;
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            "stages" if stage.is_none() && d.module.is_none() => {
                stage =
                    pipeline.and_then(|p| rest.get(i + 1).and_then(|s| p.stages.get(index(s)?)));
                d.stage = stage.map(|s| s.priority);
                candidates = STAGE_FIELDS;
                i += 2;
                continue;
            }
            "modules" if d.module.is_none() => {
                let module =
                    stage.and_then(|s| rest.get(i + 1).and_then(|m| s.modules.get(index(m)?)));
                d.module = module.map(|m| m.module_id.clone());
                candidates = MODULE_FIELDS;
                i += 2;
                continue;
            }
            "instance_config" => candidates = INSTANCE_FIELDS,
            "topic_filters" => candidates = FILTER_FIELDS,
            "conditional_rules" => candidates = RULE_FIELDS,
            _ => {}
        }
        field.push(rest[i]);
        i += 1;
    }
    field.push(name);
    d.field = Some(field.iter().fold(String::new(), |mut out, segment| {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }));
    let closest = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, c)) => d.message.push_str(&format!("; did you mean `{c}`?")),
        None => d
            .message
            .push_str(&format!("; expected one of {}", candidates.join(", "))),
    }
    d
}
