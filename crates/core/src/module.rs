//! A module occurrence: which module, and how it runs.

use std::time::Duration;

/// The settings' documented defaults, shared with the configuration model
/// (which fills the fields a pipeline leaves out with these).
pub mod defaults {
    /// Linear memory cap per instance: 64 MiB.
    pub const MEMORY_LIMIT_BYTES: usize = 64 << 20;
    /// Time budget of one call: 1000 ms.
    pub const EXECUTION_TIMEOUT_MS: u64 = 1_000;
    /// Most instances of a module at once: 10.
    pub const MAX_CONCURRENT_INSTANCES: u32 = 10;
    /// Keep idle instances for reuse: yes.
    pub const ENABLE_CACHING: bool = true;
    /// How long an idle instance is kept: 300 s.
    pub const CACHE_TTL_SECONDS: u64 = 300;
    /// The module's own configuration: JSON `null`.
    pub const CUSTOM_CONFIG: &str = "null";
    /// Instances started when a module is loaded: 1.
    pub const WARMUP_INSTANCES: u32 = 1;
    /// The largest answer accepted from a module: 16 MiB.
    pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
    /// An instance is replaced after this many calls: 100,000.
    pub const RECYCLE_AFTER_CALLS: u64 = 100_000;
    /// The instance creation rate of one engine thread, per module: 1000 a
    /// second (after a burst of 100).
    pub const MAX_CREATIONS_PER_SECOND: u32 = 1_000;
}

/// How one module occurrence runs: its limits, its pool sizing and its own
/// configuration. The first six fields are `instance_config` of design.md
/// (the configuration crate converts it, `ModuleInstanceConfig::to_settings`);
/// the others are the engine's, with the defaults of [`defaults`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleSettings {
    /// Memory cap per instance (memory and tables together).
    pub memory_limit_bytes: usize,
    /// Time budget of one call.
    pub execution_timeout_ms: u64,
    /// Most instances of the module at once.
    pub max_concurrent_instances: u32,
    /// Keep idle instances for reuse (`false`: a fresh instance per call).
    pub enable_caching: bool,
    /// How long an idle instance is kept.
    pub idle_ttl: Duration,
    /// Handed to the module's init function: JSON text.
    pub custom_config: String,
    /// Instances started when the module is loaded.
    pub warmup_instances: u32,
    /// The largest answer accepted from the module.
    pub max_output_bytes: usize,
    /// An instance is replaced after this many calls, so that guest state (and
    /// leaks) cannot grow for ever.
    pub recycle_after_calls: u64,
    /// The rate at which one engine thread may create instances of the
    /// module, per second: creations are spaced at this rate after a burst
    /// of a tenth of a second's worth (so at most rate + rate/10 in any one
    /// second).
    pub max_creations_per_second: u32,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            memory_limit_bytes: defaults::MEMORY_LIMIT_BYTES,
            execution_timeout_ms: defaults::EXECUTION_TIMEOUT_MS,
            max_concurrent_instances: defaults::MAX_CONCURRENT_INSTANCES,
            enable_caching: defaults::ENABLE_CACHING,
            idle_ttl: Duration::from_secs(defaults::CACHE_TTL_SECONDS),
            custom_config: defaults::CUSTOM_CONFIG.to_owned(),
            warmup_instances: defaults::WARMUP_INSTANCES,
            max_output_bytes: defaults::MAX_OUTPUT_BYTES,
            recycle_after_calls: defaults::RECYCLE_AFTER_CALLS,
            max_creations_per_second: defaults::MAX_CREATIONS_PER_SECOND,
        }
    }
}

/// One module occurrence: a `module_id` with its settings. The same id with
/// other settings is another occurrence (execution.md, "Modules and their
/// settings"): its own instances, limits, breaker and statistics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleSpec {
    /// The module's id, as configured.
    pub id: String,
    /// How it runs.
    pub settings: ModuleSettings,
}

impl ModuleSpec {
    /// A module with default settings.
    pub fn new(id: impl Into<String>) -> Self {
        ModuleSpec {
            id: id.into(),
            settings: ModuleSettings::default(),
        }
    }

    /// The same module with other settings.
    pub fn with_settings(mut self, settings: ModuleSettings) -> Self {
        self.settings = settings;
        self
    }
}
