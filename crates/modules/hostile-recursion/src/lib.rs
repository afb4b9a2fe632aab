//! Hostile: recurses without bound until the WebAssembly stack overflows.
use rustmq_etl_sdk::{export, Message, Outcome};

#[inline(never)]
#[allow(unconditional_recursion)] // the point of this module
fn deeper(n: u64, pad: [u64; 16]) -> u64 {
    let pad = std::hint::black_box(pad);
    deeper(n + 1, pad) + pad[(n % 16) as usize]
}

fn recurse(message: &Message) -> Outcome {
    let n = deeper(message.payload().len() as u64, [1; 16]);
    Outcome::error(format!("unreachable: {n}"))
}

export!(transform = recurse);
