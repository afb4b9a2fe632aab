//! Runs the work of a pool bench in a loop, for counting instructions, which
//! unlike times do not depend on what else the machine is doing: the identity
//! call of `identity_call_256B` (`pool`) or its floor (`floor`), the same call
//! on an instance made for it alone (`fresh`, as for a module without
//! caching), and the
//! `serde_json` round trip of `metering_overhead_serde` compiled with the
//! pool's instrumentation (`metered`) or without (`unmetered`):
//!
//! ```sh
//! cargo build --release -p rustmq-etl-pool --example call_loop
//! valgrind --tool=callgrind target/release/examples/call_loop pool 100000
//! valgrind --tool=callgrind target/release/examples/call_loop floor 100000
//! valgrind --tool=callgrind target/release/examples/call_loop fresh 2000
//! valgrind --tool=callgrind target/release/examples/call_loop metered 20000
//! valgrind --tool=callgrind target/release/examples/call_loop unmetered 20000
//! ```
//!
//! Subtract a run of 0 calls from each to leave out compiling the module.

#[path = "../benches/workload/mod.rs"]
mod workload;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    let calls: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    // A fixed bulk rate: calibrating would only add its own instructions.
    let mut call: Box<dyn FnMut()> = match which.as_str() {
        "pool" => {
            let mut identity = workload::IdentityCall::new(1_000_000);
            Box::new(move || identity.call())
        }
        "fresh" => {
            let mut fresh = workload::IdentityCall::fresh(1_000_000);
            Box::new(move || fresh.call())
        }
        "floor" => {
            let mut floor = workload::Floor::new();
            Box::new(move || floor.call())
        }
        "metered" | "unmetered" => {
            let mut round_trip = workload::RoundTrip::new(which == "metered");
            Box::new(move || {
                round_trip.call();
            })
        }
        _ => {
            eprintln!("usage: call_loop pool|fresh|floor|metered|unmetered [CALLS]");
            std::process::exit(2);
        }
    };
    let started = std::time::Instant::now();
    for _ in 0..calls {
        call();
    }
    eprintln!(
        "{which}: {calls} calls, {:?} per call",
        started.elapsed() / calls.max(1)
    );
}
