//! The runtime of [cancel-scope](https://docs.rs/cancel-scope): [`Cancelled`],
//! and the support code the `#[cancellable]` attribute calls.
//!
//! Depend on the `cancel-scope` crate instead; it re-exports everything here.
#![deny(missing_docs)]

mod cancelled;
mod ledger;
mod local;
#[doc(hidden)]
pub mod private;
mod reason;
mod report;
mod scope;
#[cfg(feature = "signal")]
mod signal;
mod task;

pub use cancelled::Cancelled;
pub use local::LocalScope;
pub use reason::CancelReason;
pub use report::{ShutdownReport, TaskOutcome, TaskReport};
pub use scope::{Scope, SpawnPermit, Spawner, TaskError, TaskHandle, TaskId, TaskOutput};
#[cfg(feature = "signal")]
pub use signal::ShutdownSignal;
pub use tokio_util::sync::CancellationToken;
