//! The runtime of [cancel-scope](https://docs.rs/cancel-scope): [`Cancelled`],
//! and the support code the `#[cancellable]` attribute calls.
//!
//! Depend on the `cancel-scope` crate instead; it re-exports everything here.
#![deny(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly): each item gated by a feature says which.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cancelled;
pub mod daemon;
pub mod fs;
mod id;
mod ledger;
mod local;
#[doc(hidden)]
pub mod private;
#[cfg(feature = "process")]
pub mod process;
mod race;
mod reason;
mod report;
mod scope;
mod shield;
#[cfg(feature = "signal")]
mod signal;
mod task;

pub use cancelled::Cancelled;
pub use id::TaskId;
pub use local::LocalScope;
pub use reason::CancelReason;
pub use report::{ShutdownReport, TaskReport};
pub use scope::{Scope, SpawnPermit, Spawner, TaskHandle};
pub use shield::{Shield, shield};
#[cfg(feature = "signal")]
pub use signal::ShutdownSignal;
pub use task::{TaskError, TaskOutcome, TaskOutput};
pub use tokio_util::sync::CancellationToken;
