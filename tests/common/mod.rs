//! What the facade's test files share: an event log, a drop guard that
//! writes to it, polling once by hand, reading a panic's message, a watchdog
//! thread, a current-thread runtime and a `tracing` recorder. Each test file
//! uses a subset of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

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

/// One span's or event's fields, as `(name, value)` pairs.
pub type Fields = Vec<(String, String)>;

/// A `tracing` subscriber that records every span (its target, its name as
/// `span`, and its fields) and every event (its target and its fields).
#[derive(Clone, Default)]
pub struct Recorder {
    pub spans: Arc<Mutex<Vec<Fields>>>,
    pub events: Arc<Mutex<Vec<Fields>>>,
}

struct Visitor(Fields);

impl Visit for Visitor {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Visitor(vec![
            ("target".into(), span.metadata().target().into()),
            ("span".into(), span.metadata().name().into()),
        ]);
        span.record(&mut fields);
        let mut spans = self.spans.lock().unwrap();
        spans.push(fields.0);
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Visitor(vec![("target".into(), event.metadata().target().into())]);
        event.record(&mut fields);
        self.events.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `fut` to completion on a current-thread runtime with its clock
/// `paused` or not, with `recorder` as the thread's subscriber.
pub fn run_recorded<R>(recorder: Recorder, paused: bool, fut: impl Future<Output = R>) -> R {
    tracing::subscriber::with_default(recorder, || {
        // A test on another thread may have registered a callsite (found
        // no subscriber wanting it) while this one was being set up, and
        // `tracing` would then skip its events here: ask every callsite again.
        tracing::callsite::rebuild_interest_cache();
        current_thread(paused).block_on(fut)
    })
}

/// The value of the field `name`, if `fields` has it.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
