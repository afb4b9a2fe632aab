//! The one trait the orchestrator runs modules through.

use std::future::Future;

use crate::Message;

/// What a module did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// The message goes on as it was.
    Unchanged,
    /// The module dropped the message.
    Dropped,
    /// The message as the module left it.
    Replaced(Message),
}

/// Runs a module, named by its id, on a message: the boundary between the
/// orchestrator and whatever executes modules (the wasmer instance pool, or a
/// plain Rust stand-in in tests). Timeouts, retries, circuit breaking and metrics
/// wrap this trait; they do not live inside it.
pub trait ModuleRunner: Send + Sync {
    /// Why a run failed; implementations give it a kind a caller can act on.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs `module` on `message`.
    fn run(
        &self,
        module: &str,
        message: &Message,
    ) -> impl Future<Output = Result<Transformed, Self::Error>> + Send;
}
