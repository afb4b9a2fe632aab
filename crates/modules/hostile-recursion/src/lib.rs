//! Hostile: recurses without bound until the WebAssembly stack overflows (unless
//! the payload is `ok`).
use rustmq_etl_sdk::{export, Message, Outcome};

/// Keeps everything in WebAssembly locals (nothing on the shadow stack in linear
/// memory), so that it is the engine's own call stack that overflows.
#[inline(never)]
#[allow(unconditional_recursion)] // the point of this module
fn deeper(n: u64) -> u64 {
    std::hint::black_box(deeper(std::hint::black_box(n + 1))) ^ n
}

fn recurse(message: &Message) -> Outcome {
    if message.payload() == b"ok" {
        return Outcome::Unchanged;
    }
    let n = deeper(message.payload().len() as u64);
    Outcome::error(format!("unreachable: {n}"))
}

export!(transform = recurse);
