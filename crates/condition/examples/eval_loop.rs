//! Evaluates the conditions bench's rules on its sixteen payloads in a loop,
//! for counting instructions with callgrind:
//!
//! ```sh
//! cargo build --release -p rustmq-etl-condition --example eval_loop
//! valgrind --tool=callgrind target/release/examples/eval_loop 20000
//! valgrind --tool=callgrind target/release/examples/eval_loop 10000   # the difference: 10,000 messages
//! ```

#[path = "../benches/support/iot.rs"]
mod iot;

use std::hint::black_box;

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rules = iot::rules();
    let inputs = iot::messages();
    let (set, groups) = iot::compiled(&rules);
    let mut scratch = set.create_scratch();
    let mut held = 0;
    for i in 0..messages {
        let mut context = set.context(black_box(&inputs[i % inputs.len()]), iot::NOW, &mut scratch);
        held += groups.iter().filter(|&&g| context.holds(g)).count();
    }
    println!("{held} rules held in {messages} messages");
}
