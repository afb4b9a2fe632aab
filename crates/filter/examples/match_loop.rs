//! Matches the topics of the `topic_match` bench against its 1,000 filters in a
//! loop, for counting instructions, which unlike times do not depend on what
//! else the machine is doing:
//!
//! ```sh
//! cargo build --release -p rustmq-etl-filter --example match_loop
//! valgrind --tool=callgrind target/release/examples/match_loop 200000
//! ```
//!
//! Subtract a run of 0 topics to leave out compiling the filters.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::hint::black_box;

use rustmq_etl_filter::FilterSetBuilder;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let topics = workload::topics();
    let mut builder = FilterSetBuilder::new();
    for slot in workload::filters() {
        builder.add_slot(slot);
    }
    let set = builder.build().expect("the bench's filters compile");
    let mut cache = set.create_cache();
    let started = std::time::Instant::now();
    let mut accepted = 0;
    for i in 0..rounds {
        accepted += set
            .matches(black_box(&topics[i % topics.len()]), &mut cache)
            .len();
    }
    eprintln!(
        "{rounds} topics, {accepted} slots accepted, {:?} per topic",
        started.elapsed() / rounds.max(1) as u32
    );
}
