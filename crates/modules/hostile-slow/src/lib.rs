//! Slow but finishing: spins for the number of million rounds given in the
//! payload (a decimal number, default 50), then passes the message on. Used to
//! show that a call within its budget completes and one beyond it is stopped.
use rustmq_etl_sdk::{export, Message, Outcome};

fn slow(message: &Message) -> Outcome {
    let rounds: u64 = std::str::from_utf8(message.payload())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(50);
    let mut x = 1u64;
    for i in 0..rounds * 1_000_000 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    Outcome::edit()
        .set_header("x-slow-result", (x % 1000).to_string())
        .into()
}

export!(transform = slow);
