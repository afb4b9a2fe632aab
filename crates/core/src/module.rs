//! A module occurrence: which module, and how it runs.

use std::time::Duration;

/// The settings' documented defaults, shared with the configuration model
/// (which fills the fields a pipeline leaves out with these).
pub mod defaults {
    /// Memory cap per instance: 64 MiB.
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
/// the others are the engine's, with the defaults of [`defaults`]. Start
/// from `ModuleSettings::default()` and set what differs with the methods of
/// the fields' names (`non_exhaustive`: a setting added later breaks no
/// program):
///
/// ```
/// use rustmq_etl_core::ModuleSettings;
/// let settings = ModuleSettings::default().execution_timeout_ms(50).custom_config(r#"{"unit":"C"}"#);
/// assert_eq!(settings.memory_limit_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// second). Not applied with `enable_caching: false`, whose every call
    /// creates its instance.
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

impl ModuleSettings {
    /// [`ModuleSettings::memory_limit_bytes`](#structfield.memory_limit_bytes).
    pub fn memory_limit_bytes(mut self, memory_limit_bytes: usize) -> Self {
        self.memory_limit_bytes = memory_limit_bytes;
        self
    }

    /// [`ModuleSettings::execution_timeout_ms`](#structfield.execution_timeout_ms).
    pub fn execution_timeout_ms(mut self, execution_timeout_ms: u64) -> Self {
        self.execution_timeout_ms = execution_timeout_ms;
        self
    }

    /// [`ModuleSettings::max_concurrent_instances`](#structfield.max_concurrent_instances).
    pub fn max_concurrent_instances(mut self, max_concurrent_instances: u32) -> Self {
        self.max_concurrent_instances = max_concurrent_instances;
        self
    }

    /// [`ModuleSettings::enable_caching`](#structfield.enable_caching).
    pub fn enable_caching(mut self, enable_caching: bool) -> Self {
        self.enable_caching = enable_caching;
        self
    }

    /// [`ModuleSettings::idle_ttl`](#structfield.idle_ttl).
    pub fn idle_ttl(mut self, idle_ttl: Duration) -> Self {
        self.idle_ttl = idle_ttl;
        self
    }

    /// [`ModuleSettings::custom_config`](#structfield.custom_config).
    pub fn custom_config(mut self, custom_config: impl Into<String>) -> Self {
        self.custom_config = custom_config.into();
        self
    }

    /// [`ModuleSettings::warmup_instances`](#structfield.warmup_instances).
    pub fn warmup_instances(mut self, warmup_instances: u32) -> Self {
        self.warmup_instances = warmup_instances;
        self
    }

    /// [`ModuleSettings::max_output_bytes`](#structfield.max_output_bytes).
    pub fn max_output_bytes(mut self, max_output_bytes: usize) -> Self {
        self.max_output_bytes = max_output_bytes;
        self
    }

    /// [`ModuleSettings::recycle_after_calls`](#structfield.recycle_after_calls).
    pub fn recycle_after_calls(mut self, recycle_after_calls: u64) -> Self {
        self.recycle_after_calls = recycle_after_calls;
        self
    }

    /// [`ModuleSettings::max_creations_per_second`](#structfield.max_creations_per_second).
    pub fn max_creations_per_second(mut self, max_creations_per_second: u32) -> Self {
        self.max_creations_per_second = max_creations_per_second;
        self
    }

    /// The `settings` label of an occurrence with these settings, which
    /// tells apart the metric series of occurrences of one `module_id`:
    /// none for the default settings (so a module configured without
    /// `instance_config` keeps the plain `module` label), otherwise a
    /// fingerprint of the settings that are not their defaults, 16 hex
    /// digits (FNV-1a, 64 bits, over those settings written out field by
    /// field). The same settings give the same fingerprint in every process
    /// and every run; other settings give another (barring a 64-bit hash
    /// collision, about one chance in 10^19 for two given settings). A
    /// setting added in a later release, left at its default, changes no
    /// label, so dashboards keep their series; a release that changes a
    /// setting's default changes the labels of the occurrences that set it
    /// to the old default or the new one.
    pub fn label(&self) -> Option<String> {
        if *self == ModuleSettings::default() {
            return None;
        }
        Some(format!("{:016x}", self.fingerprint()))
    }

    fn fingerprint(&self) -> u64 {
        let ModuleSettings {
            memory_limit_bytes,
            execution_timeout_ms,
            max_concurrent_instances,
            enable_caching,
            idle_ttl,
            custom_config,
            warmup_instances,
            max_output_bytes,
            recycle_after_calls,
            max_creations_per_second,
        } = self;
        let default = ModuleSettings::default();
        // Each setting that is not its default as `name=value` and a zero
        // byte, `custom_config` (text that may hold anything, a zero byte
        // too) with its length in bytes before it: no two settings write the
        // same text, and a setting added later, left at its default, changes
        // no label.
        let mut text = String::new();
        macro_rules! write_unless_default {
            ($($field:ident as $name:literal: $value:expr),* $(,)?) => {$(
                if *$field != default.$field {
                    text.push_str(&format!(concat!($name, "={}\0"), $value));
                }
            )*};
        }
        write_unless_default!(
            memory_limit_bytes as "memory_limit_bytes": memory_limit_bytes,
            execution_timeout_ms as "execution_timeout_ms": execution_timeout_ms,
            max_concurrent_instances as "max_concurrent_instances": max_concurrent_instances,
            enable_caching as "enable_caching": enable_caching,
            idle_ttl as "idle_ttl_ns": idle_ttl.as_nanos(),
            custom_config as "custom_config": format_args!("{}:{custom_config}", custom_config.len()),
            warmup_instances as "warmup_instances": warmup_instances,
            max_output_bytes as "max_output_bytes": max_output_bytes,
            recycle_after_calls as "recycle_after_calls": recycle_after_calls,
            max_creations_per_second as "max_creations_per_second": max_creations_per_second,
        );
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

/// One module occurrence: a `module_id` with its settings. The same id with
/// other settings is another occurrence (docs/execution.md, "Occurrences"):
/// its own instances, limits, breaker and statistics.
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

    /// The labels of the occurrence's metric series: `module`, and
    /// `settings` ([`ModuleSettings::label`]) unless its settings are the
    /// defaults.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![("module", self.id.clone())];
        labels.extend(self.settings.label().map(|label| ("settings", label)));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_have_no_label_and_any_change_gives_another() {
        let default = ModuleSettings::default();
        assert_eq!(default.label(), None);
        let changes: Vec<fn(&mut ModuleSettings)> = vec![
            |s| s.memory_limit_bytes += 1,
            |s| s.execution_timeout_ms = 50,
            |s| s.max_concurrent_instances = 1,
            |s| s.enable_caching = false,
            |s| s.idle_ttl = Duration::from_millis(300_001),
            |s| s.custom_config = r#"{"a":1}"#.to_owned(),
            // Not JSON, and what its text would read as without its length.
            |s| s.custom_config = "x\0warmup_instances=5".to_owned(),
            |s| {
                s.custom_config = "x".to_owned();
                s.warmup_instances = 5;
            },
            |s| s.warmup_instances = 0,
            |s| s.max_output_bytes = 1 << 20,
            |s| s.recycle_after_calls = 1,
            |s| s.max_creations_per_second = 10,
        ];
        let mut labels = std::collections::HashSet::new();
        for change in changes {
            let mut settings = default.clone();
            change(&mut settings);
            let label = settings.label().expect("non-default settings are labelled");
            assert_eq!(label.len(), 16);
            assert!(label.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(settings.clone().label(), Some(label.clone()), "stable");
            assert!(labels.insert(label), "each change its own label");
        }
    }

    #[test]
    fn the_label_is_the_same_in_every_run() {
        // Pinned: dashboards keep their series across restarts and releases,
        // so changing how the fingerprint is made must be deliberate. Only
        // the settings that are not their defaults are written, in the
        // fields' order, so that a setting added later, left at its default,
        // changes no label.
        let settings = ModuleSettings {
            execution_timeout_ms: 50,
            ..ModuleSettings::default()
        };
        assert_eq!(settings.label().as_deref(), Some(PINNED));
        let settings = ModuleSettings {
            custom_config: r#"{"a":1}"#.to_owned(),
            ..settings
        };
        assert_eq!(settings.label().as_deref(), Some(PINNED_TWO));
    }

    // Computed apart from this code: FNV-1a, in Python, of
    // "execution_timeout_ms=50\0" and of
    // "execution_timeout_ms=50\0custom_config=7:{\"a\":1}\0".
    const PINNED: &str = "7591c7a4aaa23cd0";
    const PINNED_TWO: &str = "fa28dcd66050b146";
}
