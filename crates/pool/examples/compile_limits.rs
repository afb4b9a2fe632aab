//! How long Cranelift takes on the shapes that make compiling slow, each built
//! right at a default [`CompileLimits`] limit (what a module may still do) and,
//! with the limits lifted, well past it (what the limit keeps out):
//!
//! ```sh
//! cargo run --release -p rustmq-etl-pool --example compile_limits
//! cargo run --release -p rustmq-etl-pool --example compile_limits -- past   # slow: minutes
//! ```
//!
//! The modules are not rustmq-etl modules (they export no ABI), so each load
//! ends with an ABI error after compiling: the time is the compiler's.

use std::time::{Duration, Instant};

use rustmq_etl_core::ModuleSpec;
use rustmq_etl_pool::{CompileLimits, CompileSettings, LoadedModule};

fn locals(n: usize) -> String {
    "(local i64)".repeat(n)
}

fn module(locals: usize, body: &str) -> String {
    format!(
        r#"(module (memory (export "memory") 1) (func {} {body}))"#,
        self::locals(locals)
    )
}

/// `depth` nested loops, each looping back, around `locals` locals all
/// updated in the innermost body.
fn nested_loops(depth: usize, locals: usize) -> String {
    let mut body = "(loop ".repeat(depth);
    for i in 0..locals {
        body.push_str(&format!(
            "(local.set {i} (i64.add (local.get {i}) (i64.const 1)))"
        ));
    }
    for d in 0..depth {
        body.push_str(&format!(
            "(br_if 0 (i32.wrap_i64 (local.get {}))))",
            d % locals
        ));
    }
    module(locals, &body)
}

/// `count` ifs in a row, each reading two locals last written far back.
fn joins(count: usize, locals: usize) -> String {
    let body: String = (0..count)
        .map(|k| {
            let (i, j) = (k % locals, (k * 7 + 3) % locals);
            format!("(if (i32.wrap_i64 (local.get {j})) (then (local.set {i} (i64.add (local.get {j}) (local.get {i})))))")
        })
        .collect();
    module(locals, &body)
}

/// `ops` straight-line updates over `locals` locals.
fn straight(ops: usize, locals: usize) -> String {
    let body: String = (0..ops / 4)
        .map(|k| {
            let (i, j) = (k % locals, (k * 7 + 3) % locals);
            format!("(local.set {i} (i64.add (local.get {j}) (local.get {i})))")
        })
        .collect();
    module(locals, &body)
}

fn br_table(targets: usize) -> String {
    format!(
        r#"(module (memory (export "memory") 1) (func (param i32) (block (br_table {} (local.get 0)))))"#,
        "0 ".repeat(targets)
    )
}

fn main() {
    let past = std::env::args().nth(1).as_deref() == Some("past");
    let limits = if past {
        CompileLimits {
            max_function_operators: u32::MAX,
            max_function_locals: u32::MAX,
            max_nesting: u32::MAX,
            max_br_table_targets: u32::MAX,
            max_locals_times_loop_depth: u64::MAX,
            max_local_joins: u64::MAX,
            max_module_bytes: usize::MAX,
            compile_timeout: Duration::from_secs(3600),
        }
    } else {
        CompileLimits::default()
    };
    let defaults = CompileLimits::default();
    let cases: Vec<(String, String)> = if past {
        vec![
            (
                "200 nested loops × 200 locals".into(),
                nested_loops(200, 200),
            ),
            ("10,000 ifs over 1,000 locals".into(), joins(10_000, 1_000)),
            ("br_table of 1,000,000 targets".into(), br_table(1_000_000)),
        ]
    } else {
        let most_locals = defaults.max_function_locals as usize;
        vec![
            (
                format!("2 nested loops × {most_locals} locals (locals × depth at its limit)"),
                nested_loops(2, most_locals),
            ),
            (
                "100 nested loops × 100 locals (locals × depth at its limit)".into(),
                nested_loops(100, 100),
            ),
            (
                "10,000 ifs over 100 locals (about 1,000,000 joins)".into(),
                joins(10_000, 100),
            ),
            (
                format!(
                    "{} straight-line operators",
                    defaults.max_function_operators
                ),
                straight(defaults.max_function_operators as usize - 10, 100),
            ),
            (
                format!("br_table of {} targets", defaults.max_br_table_targets),
                br_table(defaults.max_br_table_targets as usize),
            ),
        ]
    };
    let settings = CompileSettings {
        limits,
        bulk_bytes_per_ms: 1_000_000,
        cache: None,
    };
    for (name, text) in cases {
        let wasm = wat::parse_str(&text).unwrap();
        let started = Instant::now();
        let result = LoadedModule::compile(&ModuleSpec::new("shape"), &wasm, &settings);
        let took = started.elapsed();
        let verdict = match result {
            Err(rustmq_etl_pool::LoadError::Abi { .. }) => "compiled".to_owned(),
            Err(e) => e.to_string(),
            Ok(_) => "compiled".to_owned(),
        };
        println!(
            "{name:70} {:>8.0} ms  ({} bytes; {verdict})",
            took.as_secs_f64() * 1000.0,
            wasm.len()
        );
    }
}
