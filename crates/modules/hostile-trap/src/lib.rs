//! Hostile: panics on every message whose payload is not `ok` (a panic is a trap
//! in WebAssembly).
use rustmq_etl_sdk::{export, Message, Outcome};

fn trap(message: &Message) -> Outcome {
    if message.payload() == b"ok" {
        return Outcome::Unchanged;
    }
    let index = std::hint::black_box(message.payload().len() + 10);
    let table = [1u8, 2, 3];
    panic!("deliberate panic: index {index} of {}", table.len())
}

export!(transform = trap);
