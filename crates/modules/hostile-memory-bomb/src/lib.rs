//! Hostile: allocates without bound (unless the payload is `ok`). The engine must
//! stop it at its memory limit.
use rustmq_etl_sdk::{export, Message, Outcome};

fn bomb(message: &Message) -> Outcome {
    if message.payload() == b"ok" {
        return Outcome::Unchanged;
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // 1 MiB at a time, touched so that it is really used.
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

export!(transform = bomb);
