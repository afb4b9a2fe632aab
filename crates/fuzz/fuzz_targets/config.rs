//! Configuration loading and validation, YAML and JSON: any text gives a
//! configuration or errors, never a panic; a valid one compiles into a plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_etl_config::{Config, Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Yaml, Format::Json] {
        match Config::from_text(text, format, None) {
            Ok(loaded) => {
                // A validated configuration must compile.
                rustmq_etl_orchestrator::Plan::build(&loaded.config)
                    .expect("a configuration that validates compiles into a plan");
            }
            Err(e) => {
                assert!(e.errors().count() > 0, "an error without a diagnostic");
            }
        }
    }
});
