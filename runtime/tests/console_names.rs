//! Named `Scope` tasks carry their names to Tokio's task builder, where
//! tokio-console reads them (the `task.name` field of Tokio's
//! `runtime.spawn` span). Only built with `--cfg tokio_unstable` and the
//! `tracing` feature, the one build where Tokio names tasks:
//!
//! ```text
//! RUSTFLAGS="--cfg tokio_unstable" cargo test -p cancel-scope-runtime \
//!     --features tracing --test console_names --target-dir target-unstable
//! ```
#![cfg(all(tokio_unstable, feature = "tracing"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cancel_scope_runtime::Scope;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records the `task.name` of every span Tokio opens for a spawn (empty for
/// an unnamed task).
#[derive(Clone, Default)]
struct TaskNames(Arc<Mutex<Vec<String>>>);

struct NameField<'a>(&'a mut Option<String>);

impl Visit for NameField<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "task.name" {
            *self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "task.name" {
            *self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl Subscriber for TaskNames {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        if span.metadata().name() == "runtime.spawn" {
            let mut name = None;
            span.record(&mut NameField(&mut name));
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                self.0.lock().unwrap().push(name);
            }
        }
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn named_tasks_show_their_names_to_tokio() {
    let names = TaskNames::default();
    let _guard = tracing::subscriber::set_default(names.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut scope = Scope::new().with_limit(1);
        scope.spawn_named("writer", |_token| async {});
        scope.spawn_named(format!("conn {}", 7), |_token| async {}); // queued
        scope.spawn_blocking_named("checksum", |_token| ());
        scope.spawn(|_token| async {}); // unnamed
        scope.spawner().spawn_named("sub-task", |_token| async {});
        scope.shutdown(Duration::from_secs(5)).await;
    });
    let mut seen = names.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["checksum", "conn 7", "sub-task", "writer"]);
}
