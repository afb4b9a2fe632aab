//! Hostile: never returns (unless the payload is `ok`). The engine must stop it
//! at the call's time budget.
use rustmq_etl_sdk::{export, Message, Outcome};

fn spin(message: &Message) -> Outcome {
    if message.payload() == b"ok" {
        return Outcome::Unchanged;
    }
    let mut n = message.payload().len() as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        if n == 0 && std::hint::black_box(false) {
            return Outcome::Unchanged;
        }
    }
}

export!(transform = spin);
