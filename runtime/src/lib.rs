//! The runtime of [cancel-scope](https://docs.rs/cancel-scope): [`Cancelled`],
//! and the support code the `#[cancellable]` attribute calls.
//!
//! Depend on the `cancel-scope` crate instead; it re-exports everything here.
#![deny(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly): each item gated by a feature says which.
#![cfg_attr(docsrs, feature(doc_cfg))]

// Module map, by layer. Every `use crate::` points to the same layer or one
// below; none points up, and no two modules import each other.
//
// 1. Leaves, the vocabulary: `id` (TaskId), `reason` (CancelReason; below
//    it the `cause` kept beside a scope's token, with the `signals` it may
//    come from, and the thread's `current` cause), `cancelled` (Cancelled),
//    `task` (TaskError, TaskOutcome, TaskOutput).
// 2. The race `#[cancellable]` runs: `race` (the race, its one per-thread
//    frame, the drain, the cleanup, the exit), `shield`, and `private` (what
//    generated code calls, re-exported from `race`).
// 3. The books: `report` (TaskReport, ShutdownReport, the reaped tally),
//    below `ledger` (the tasks of one scope, its policies).
// 4. The scopes: `scope` (Scope; its `state` and task wrapper below
//    its `handle`s: TaskHandle, Spawner, SpawnPermit), `local` (LocalScope),
//    `signal` (ShutdownSignal).
// 5. On Scope: `daemon` (its modules import their parent's `Shared`, never
//    each other in a circle), `process` (Child), `fs` (AtomicFile).
//
// `python3 runtime/tests/module_cycles.py runtime/src` checks it (CI runs it).

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
