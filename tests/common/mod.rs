//! What the facade's test files share: an event log, a drop guard that
//! writes to it, polling once by hand, reading a panic's message, a watchdog
//! thread and a current-thread runtime. Each test file uses a subset of it.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// An ordered record of what happened, shared between a fn and its test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<&'static str>>>);

impl Log {
    pub fn push(&self, event: &'static str) {
        self.0.lock().unwrap().push(event);
    }

    pub fn events(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, event: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| **e == event)
            .count()
    }
}

/// Records `event` in the log when dropped.
pub struct Guard(pub Log, pub &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.push(self.1);
    }
}

/// Polls `fut` once without a real waker (the test drives it again later).
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// The message of a panic payload, when it is a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

/// Runs `f` on a thread of its own and fails if it does not end within a
/// generous minute (a wedged current-thread runtime cannot time itself out);
/// a panic in `f` is the caller's.
pub fn on_watched_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the thread hung")
    {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A current-thread runtime with every driver, its clock `paused` or not.
pub fn current_thread(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}
