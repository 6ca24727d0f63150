//! [`TaskId`]: what identifies a task of a scope. A leaf of the vocabulary:
//! reasons, errors, reports and scopes all name tasks by it.

use std::fmt;

#[cfg(doc)]
use crate::{Scope, ShutdownReport};

/// Identifies a task of a [`Scope`]: [`spawn`](Scope::spawn) returns it, and
/// [`join_next_with_id`](Scope::join_next_with_id) hands it back with the
/// task's result, so a result (or a panic) can be traced to its task.
///
/// An id is unique within its scope: ids are never reused, not even after
/// the scope was emptied and spawned into again (ids of different scopes may
/// be equal). Ids compare in spawn order: a task spawned later has a greater
/// id. A `TaskId` displays as its number; a [`ShutdownReport`] names an
/// unnamed task `task #<id>`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let parse = scope.spawn(|_token| async { "42".parse::<u32>() });
/// let fetch = scope.spawn(|_token| async { "x".parse::<u32>() });
/// assert!(parse < fetch);
/// while let Some((id, result)) = scope.join_next_with_id().await {
///     let value = result.unwrap(); // no panic here
///     if id == fetch {
///         assert!(value.is_err());
///     } else {
///         assert_eq!(value, Ok(42));
///     }
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    /// The id of the task with sequence number `seq`, for
    /// [`LocalScope`](crate::LocalScope).
    pub(crate) const fn from_seq(seq: u64) -> Self {
        TaskId(seq)
    }
}

/// The task's number, as in `task #3`.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::Scope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut scope = Scope::new();
/// let id = scope.spawn(|_token| async {});
/// assert_eq!(format!("task #{id}"), "task #0");
/// # }
/// ```
impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
