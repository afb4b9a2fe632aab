//! Errors with kinds a caller can act on.

use std::fmt;

/// What went wrong in a call, as a label for metrics and decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call ran past its time budget.
    Timeout,
    /// The guest tried to grow its memory past the limit.
    MemoryLimit,
    /// The guest trapped (panic, `unreachable`, stack overflow, bad memory access, …).
    Trap,
    /// The guest's answer broke the ABI (out of bounds, too large, malformed).
    InvalidOutput,
    /// The guest answered with an error of its own for this message.
    Guest,
    /// The module's init function refused its configuration, or instantiation failed.
    Init,
    /// No module with this id is loaded.
    NotFound,
    /// The pool is shutting down.
    ShutDown,
    /// A [`LocalPool`](crate::LocalPool) may not create another instance of
    /// this module yet (`max_creations_per_second`); a [`Pool`](crate::Pool)
    /// never answers this: its worker runs the call once it may.
    Throttled,
}

impl ErrorKind {
    /// A stable lowercase name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::Trap => "trap",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::Guest => "guest_error",
            ErrorKind::Init => "init",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ShutDown => "shut_down",
            ErrorKind::Throttled => "throttled",
        }
    }

    /// Whether the instance that failed must be thrown away (it may be corrupt).
    pub fn discards_instance(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::MemoryLimit
                | ErrorKind::Trap
                | ErrorKind::InvalidOutput
                | ErrorKind::Init
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: its kind, the module, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("module {module:?}: {message}")]
pub struct CallError {
    kind: ErrorKind,
    module: String,
    message: String,
}

impl CallError {
    pub(crate) fn new(kind: ErrorKind, module: &str, message: impl Into<String>) -> Self {
        CallError {
            kind,
            module: module.to_owned(),
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The module's id.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// What happened, for a person.
    pub fn message(&self) -> &str {
        &self.message
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
    /// The module does not speak the rustmq-etl ABI, or imports what guests may not have.
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
