//! What the code `#[cancellable]` generates calls, reached only through
//! `::cancel_scope::__private`. Not a public API: the names here may change
//! in any release. It lives in `crate::race`, whose header states its rules.

pub use crate::race::cleanup::{Cleanup, CleanupEnd, Name, cleanup, cleanup_within, name};
pub use crate::race::exit::{
    AsResult, Exit, Finish, Flatten, Flattened, Run, declared_type, exit, flatten, run, run_flatten,
};
pub use crate::race::{
    CleanupReports, Deadline, NoDeadline, Race, RaceDeadline, RaceTimeout, child_token, race,
    race_timeout,
};
