//! The runtime of [cancel-scope](https://docs.rs/cancel-scope): [`Cancelled`],
//! and the support code the `#[cancellable]` attribute calls.
//!
//! Depend on the `cancel-scope` crate instead; it re-exports everything here.
#![deny(missing_docs)]

// Module map, by layer. Every `use crate::` points to the same layer or one
// below; none points up, and no two modules import each other.
//
// 1. Leaves, the vocabulary: `id` (TaskId), `reason` (CancelReason, the
//    scope's cause), `cancelled` (Cancelled), `task` (TaskError, TaskOutcome,
//    TaskOutput).
// 2. The race `#[cancellable]` runs: `nest` (per-thread state of nested
//    calls), `private` (what generated code calls), `shield`.
// 3. The books: `report` (TaskReport, ShutdownReport, the reaped tally),
//    below `ledger` (the tasks of one scope, its policies).
// 4. The scopes: `scope` (Scope; its `state` and task wrapper below
//    its `handle`s: TaskHandle, Spawner, SpawnPermit), `local` (LocalScope),
//    `signal` (ShutdownSignal).
// 5. `daemon`, on Scope.

mod cancelled;
pub mod daemon;
mod id;
mod ledger;
mod local;
mod nest;
#[doc(hidden)]
pub mod private;
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
