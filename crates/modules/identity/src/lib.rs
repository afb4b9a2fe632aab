//! Passes every message on unchanged: the overhead floor of the engine.
use rustmq_etl_sdk::{export, Message, Outcome};

fn identity(_message: &Message) -> Outcome {
    Outcome::Unchanged
}

export!(transform = identity);
