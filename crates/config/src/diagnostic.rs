//! Problems found in a configuration, each with where it is.

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration works, but probably not as meant.
    Warning,
}

/// One problem, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// Line and column (1-based), when the parser gave them.
    pub line_column: Option<(usize, usize)>,
    /// The pipeline's id (or its position when it has none).
    pub pipeline: Option<String>,
    /// The stage's priority.
    pub stage: Option<u32>,
    /// The module's id.
    pub module: Option<String>,
    /// The field, as a path from the module (or stage, or pipeline) down.
    pub field: Option<String>,
    /// What is wrong, no final period; it starts lowercase but for a name
    /// (`Exact filters …`) or a parser's own text.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: None,
            line_column: None,
            pipeline: None,
            stage: None,
            module: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.severity {
            Severity::Error => "error: ",
            Severity::Warning => "warning: ",
        })?;
        match (&self.file, self.line_column) {
            (Some(file), Some((line, column))) => {
                write!(f, "{}:{line}:{column}: ", file.display())?
            }
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            // Text given without a file name (`Config::from_text`).
            (None, Some((line, column))) => write!(f, "line {line}, column {column}: ")?,
            (None, None) => {}
        }
        let mut place = Vec::new();
        if let Some(p) = &self.pipeline {
            place.push(format!("pipeline {p:?}"));
        }
        if let Some(s) = self.stage {
            place.push(format!("stage {s}"));
        }
        if let Some(m) = &self.module {
            place.push(format!("module {m:?}"));
        }
        if let Some(field) = &self.field {
            place.push(format!("field `{field}`"));
        }
        if !place.is_empty() {
            write!(f, "{}: ", place.join(", "))?;
        }
        f.write_str(&self.message)
    }
}

/// A configuration that cannot be used: every error found, and the warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub(crate) fn new(diagnostics: Vec<Diagnostic>) -> Self {
        ConfigError { diagnostics }
    }

    /// Every problem found, errors and warnings, in the order found.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The errors alone.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.errors().count();
        write!(
            f,
            "invalid configuration ({errors} error{})",
            if errors == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}
