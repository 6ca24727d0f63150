//! `Scope<T>`: structured spawning over a `JoinSet`. (Being written.)
