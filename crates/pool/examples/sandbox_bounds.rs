//! Times every attack of `tests/attacks` in an optimised build, at two time
//! budgets, against the sandbox's bound (twice the budget plus 10 ms):
//!
//! ```sh
//! cargo run --release -p rustmq-etl-pool --example sandbox_bounds
//! ```
//!
//! Each attack runs five times; the slowest run is printed.

#[path = "../tests/attacks/mod.rs"]
mod attacks;

use std::time::{Duration, Instant};

use rustmq_etl_core::{ErrorKind, Message, ModuleSettings, ModuleSpec};
use rustmq_etl_pool::{Pool, PoolConfig};

fn main() {
    let pool = Pool::new(PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    println!(
        "calibrated bulk rate: {} bytes/ms",
        pool.bulk_bytes_per_ms()
    );
    let attack = Message::new("t", vec![b'a'; 200]);
    for budget_ms in [10, 50, 200] {
        let bound = Duration::from_millis(2 * budget_ms + 10);
        println!("budget {budget_ms} ms (bound {bound:?}):");
        for case in attacks::time_attacks() {
            let settings = ModuleSettings::default().execution_timeout_ms(budget_ms);
            let spec = ModuleSpec::new(case.id).with_settings(settings);
            let module = pool.load(&spec, &case.wasm).unwrap();
            let slowest = (0..5)
                .map(|_| {
                    let started = Instant::now();
                    let err = pool.call_blocking(&module, &attack).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
                    started.elapsed()
                })
                .max()
                .unwrap_or_default();
            println!(
                "  {:22} {:>7.1} ms{}",
                case.id,
                slowest.as_secs_f64() * 1000.0,
                if slowest > bound {
                    "  OVER THE BOUND"
                } else {
                    ""
                }
            );
        }
    }
}
