//! The rustmq-etl configuration model.
//!
//! Every type of `design.md`'s data model, with its field and variant names, as
//! plain serde data; loading from YAML or JSON files or a directory of them; and
//! validation that reports every problem at once, each naming the file (with line
//! and column where the parser gives one), pipeline, stage, module and field.
//!
//! A configuration file holds either one pipeline object or an object with a
//! `pipelines` list of them. Fields left out take the defaults documented on each
//! field (see also `docs/configuration.md`). Unknown fields are errors, so a typo
//! never passes silently.
//!
//! ```
//! use rustmq_etl_config::{Config, Format};
//!
//! let yaml = r#"
//! pipeline_id: iot
//! stages:
//!   - priority: 0
//!     modules:
//!       - module_id: sensor-data-validator
//!         topic_filters:
//!           - { filter_type: Prefix, pattern: "iot.sensors." }
//! "#;
//! let loaded = Config::from_text(yaml, Format::Yaml, None)?;
//! let pipeline = &loaded.config.pipelines()[0].pipeline;
//! assert_eq!(pipeline.global_timeout_ms, 5000);
//! assert!(pipeline.stages[0].modules[0].topic_filters[0].case_sensitive);
//! # Ok::<(), rustmq_etl_config::ConfigError>(())
//! ```
#![warn(missing_docs)]

mod diagnostic;
mod load;
mod model;
mod types;
mod validate;

pub use diagnostic::{ConfigError, Diagnostic, Severity};
pub use load::{Config, Format, Loaded, PipelineSource};
pub use model::*;
