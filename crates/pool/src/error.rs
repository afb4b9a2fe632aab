//! Errors with kinds a caller can act on: a failed call carries the kind of
//! `rustmq-etl-core` (execution.md's kinds); a failed load says which step.

use rustmq_etl_core::ErrorKind;

/// Whether an instance whose call failed with `kind` must be thrown away (it
/// may be corrupt): every kind but the guest's own error answer. (A call that
/// never started, `unavailable` or `circuit_open`, had no instance.)
pub(crate) fn discards_instance(kind: ErrorKind) -> bool {
    !matches!(kind, ErrorKind::GuestError)
}

/// Why a [`Pool`](crate::Pool) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Measuring the bulk memory rate failed (`PoolConfig::bulk_bytes_per_ms`
    /// was not given).
    #[error("cannot measure the bulk memory rate: {0}")]
    Calibration(String),
    /// The artifact cache's directory cannot be used.
    #[error("artifact cache {dir}: {message}")]
    ArtifactCache {
        /// The directory.
        dir: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The operating system would not start a worker thread.
    #[error("cannot start a worker thread: {0}")]
    Thread(String),
}

/// A failed call: the module, its kind and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("module {module:?}: {error}")]
pub struct CallError {
    module: String,
    error: rustmq_etl_core::CallError,
}

impl CallError {
    pub(crate) fn new(kind: ErrorKind, module: &str, message: impl Into<String>) -> Self {
        CallError {
            module: module.to_owned(),
            error: rustmq_etl_core::CallError::new(kind, message),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The module's id.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// What happened, for a person.
    pub fn message(&self) -> &str {
        self.error.message()
    }
}

impl From<CallError> for rustmq_etl_core::CallError {
    fn from(e: CallError) -> Self {
        e.error
    }
}

/// Why a module could not be loaded (it was not swapped in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("module {module:?}: cannot read {path}: {message}")]
    Read {
        /// The module's id.
        module: String,
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The bytes are not a valid WebAssembly module, or do not compile.
    #[error("module {module:?}: does not compile: {message}")]
    Compile {
        /// The module's id.
        module: String,
        /// The compiler's explanation.
        message: String,
    },
    /// The module does not speak the rustmq-etl ABI: an export missing or of
    /// the wrong type, or `rmq_etl.log` imported with another signature (an
    /// import guests may not have at all is [`LoadError::Refused`]).
    #[error("module {module:?}: {message}")]
    Abi {
        /// The module's id.
        module: String,
        /// What is missing or forbidden.
        message: String,
    },
    /// A first instance could not be created or initialised.
    #[error("module {module:?}: cannot start: {message}")]
    Init {
        /// The module's id.
        module: String,
        /// The instantiation or init failure.
        message: String,
    },
    /// The module breaks a rule of the sandbox: a WebAssembly feature or an
    /// import it may not have, a size limit, or more memory than its limit.
    #[error("module {module:?}: refused: {message}")]
    Refused {
        /// The module's id.
        module: String,
        /// Which rule, and how it is broken.
        message: String,
    },
    /// The module's limits are unusable.
    #[error("module {module:?}: {message}")]
    Limits {
        /// The module's id.
        module: String,
        /// What is wrong.
        message: String,
    },
}

impl From<LoadError> for rustmq_etl_core::LoadError {
    fn from(e: LoadError) -> Self {
        use rustmq_etl_core::LoadStep;
        let (step, module) = match &e {
            LoadError::Read { module, .. } => (LoadStep::Read, module.clone()),
            LoadError::Compile { module, .. }
            | LoadError::Abi { module, .. }
            | LoadError::Refused { module, .. }
            | LoadError::Limits { module, .. } => (LoadStep::Compile, module.clone()),
            LoadError::Init { module, .. } => (LoadStep::Start, module.clone()),
        };
        // The text without the module prefix, which core's error adds again.
        let text = e.to_string();
        let prefix = format!("module {module:?}: ");
        let message = text.strip_prefix(&prefix).unwrap_or(&text).to_owned();
        rustmq_etl_core::LoadError::new(step, module, message)
    }
}
