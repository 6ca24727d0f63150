//! `fs::AtomicFile`: never a half-written target nor a temporary file left,
//! whatever point a write is cancelled or aborted at; a commit cut mid-way
//! completes; errors that say what and where.

use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use cancel_scope::fs::AtomicFile;
use cancel_scope::{CancellationToken, Cancelled, cancellable};
use tokio::io::AsyncWriteExt;

const BOUND: Duration = Duration::from_secs(20);
const LINES: usize = 256;

/// A fresh directory, removed with what is in it when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "cancel-scope-atomic-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        Dir(path)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Waits (bounded) until only `out.txt` is left: a commit handed to the
    /// blocking pool before an abort finishes a moment later.
    async fn settled(&self) {
        let start = Instant::now();
        while self.entries() != ["out.txt"] {
            assert!(
                start.elapsed() < BOUND,
                "a temporary file was left: {:?}",
                self.entries()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The whole content of version `v`: `LINES` equal lines.
fn content(v: u32) -> Vec<u8> {
    format!("version {v:08} of a file that must never be seen torn\n")
        .repeat(LINES)
        .into_bytes()
}

/// Which whole version `bytes` is, or a panic saying it is torn.
fn version_of(bytes: &[u8]) -> u32 {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    let first = text.lines().next().expect("not empty");
    let v: u32 = first[8..16].parse().expect("a version line");
    assert_eq!(bytes, content(v), "the target is torn");
    v
}

/// Writes version `v` in small pieces (many `.await`s), then commits.
async fn write_version(path: PathBuf, v: u32) -> std::io::Result<()> {
    let mut file = AtomicFile::create(&path).await?;
    for line in content(v).chunks(61) {
        file.write_all(line).await?;
    }
    file.commit().await
}

/// A small deterministic generator, so a failing seed can be rerun.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// Polls the write of a new version `polls` times, yielding between polls
/// (so the blocking pool makes progress), then drops it.
async fn poll_then_drop(path: PathBuf, v: u32, polls: u64) -> bool {
    let mut fut = pin!(write_version(path, v));
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = polled {
            result.unwrap();
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_at_any_point_never_tears_the_target_nor_leaves_a_temp_file() {
    let dir = Dir::new("dropped");
    let path = dir.0.join("out.txt");
    std::fs::write(&path, content(0)).unwrap();
    let mut seed = 0x5eed;
    let mut committed = 0;
    for v in 1..=300 {
        let before = version_of(&std::fs::read(&path).unwrap());
        // Every tenth write runs to the end, so both sides are exercised
        // however slow the machine.
        let polls = if v % 10 == 0 {
            u64::MAX
        } else {
            next(&mut seed) % 400
        };
        let finished = poll_then_drop(path.clone(), v, polls).await;
        dir.settled().await;
        let after = version_of(&std::fs::read(&path).unwrap());
        assert!(
            after == before || after == v,
            "seed {v}: {before} -> {after}"
        );
        if finished {
            assert_eq!(after, v, "seed {v}: a finished commit is seen");
        }
        committed += usize::from(after == v);
    }
    // Both sides were exercised: some writes were cut, some went through.
    assert!(
        committed > 0 && committed < 300,
        "{committed} of 300 committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_write_never_tears_the_target_nor_leaves_a_temp_file() {
    let dir = Dir::new("aborted");
    let path = dir.0.join("out.txt");
    std::fs::write(&path, content(0)).unwrap();
    let mut seed = 0xab07;
    for v in 1..=200 {
        let before = version_of(&std::fs::read(&path).unwrap());
        let task = tokio::spawn(write_version(path.clone(), v));
        tokio::time::sleep(Duration::from_micros(next(&mut seed) % 3_000)).await;
        task.abort();
        let finished = task.await.is_ok();
        dir.settled().await;
        let after = version_of(&std::fs::read(&path).unwrap());
        assert!(
            after == before || after == v,
            "seed {v}: {before} -> {after}"
        );
        if finished {
            assert_eq!(after, v);
        }
    }
}

#[cancellable]
async fn write_then_commit(
    path: PathBuf,
    v: u32,
    started: tokio::sync::mpsc::UnboundedSender<()>,
) -> std::io::Result<()> {
    let mut file = AtomicFile::create(&path).await?;
    file.write_all(&content(v)).await?;
    started.send(()).unwrap();
    file.commit().await
}

/// The token is cancelled as soon as the commit starts: the commit is
/// shielded, so it completes, and the fn then returns `Err(Cancelled)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cancelled_mid_way_completes() {
    let dir = Dir::new("commit");
    let path = dir.0.join("out.txt");
    std::fs::write(&path, content(0)).unwrap();
    let mut cut = 0;
    for v in 1..=50 {
        let token = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(write_then_commit(token.clone(), path.clone(), v, tx));
        rx.recv().await.unwrap();
        token.cancel();
        match task.await.unwrap() {
            Err(Cancelled { .. }) => cut += 1,
            Ok(result) => result.unwrap(),
        }
        // Cancelled during the commit or not, the commit went through.
        assert_eq!(version_of(&std::fs::read(&path).unwrap()), v);
        assert_eq!(dir.entries(), ["out.txt"]);
    }
    assert!(cut > 0, "no cancellation landed during a commit");
}

#[tokio::test]
async fn a_dropped_file_leaves_the_target_unchanged_and_no_temp_file() {
    let dir = Dir::new("drop");
    let path = dir.0.join("out.txt");
    std::fs::write(&path, "old\n").unwrap();
    let mut file = AtomicFile::create(&path).await.unwrap();
    file.write_all(b"half of the new").await.unwrap();
    assert_eq!(dir.entries().len(), 2, "the temporary file is beside it");
    drop(file);
    assert_eq!(dir.entries(), ["out.txt"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
}

#[tokio::test]
async fn a_commit_creates_a_missing_target_and_keeps_an_existing_ones_mode() {
    let dir = Dir::new("create");
    let path = dir.0.join("out.txt");
    let mut file = AtomicFile::create(&path).await.unwrap();
    file.write_all(b"first\n").await.unwrap();
    file.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut file = AtomicFile::create(&path).await.unwrap();
        file.write_all(b"second\n").await.unwrap();
        file.commit().await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
    }
}

fn assert_names(err: &std::io::Error, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error names {}: {text}",
        path.display()
    );
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let dir = Dir::new("missing");
    let path = dir.0.join("no-such-dir").join("out.txt");
    let err = AtomicFile::create(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_names(&err, &dir.0.join("no-such-dir"));
    assert!(err.to_string().starts_with("cannot write "), "{err}");
}

#[tokio::test]
async fn a_target_that_is_a_directory_is_a_clear_error() {
    let dir = Dir::new("isdir");
    let path = dir.0.join("sub");
    std::fs::create_dir(&path).unwrap();
    let err = AtomicFile::create(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IsADirectory);
    assert_names(&err, &path);
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert_eq!(dir.entries(), ["sub"], "nothing created");
}

#[tokio::test]
async fn a_parent_that_is_a_file_is_a_clear_error() {
    let dir = Dir::new("notdir");
    let file = dir.0.join("file");
    std::fs::write(&file, "").unwrap();
    let err = AtomicFile::create(file.join("out.txt")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory);
    assert_names(&err, &file);
}

#[cfg(unix)]
#[tokio::test]
async fn a_read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("readonly");
    let ro = dir.0.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes to a 0555 directory anyway; /sys refuses even root.
    let ro = if std::fs::write(ro.join("probe"), "").is_ok() {
        let sys = PathBuf::from("/sys");
        assert!(std::fs::write(sys.join("cancel-scope-probe"), "").is_err());
        sys
    } else {
        ro
    };
    let err = AtomicFile::create(ro.join("out.txt")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_names(&err, &ro.join("out.txt"));
    assert!(err.to_string().contains("creating "), "{err}");
}

#[test]
fn atomic_file_is_send_and_unpin() {
    fn send_unpin<T: Send + Unpin>() {}
    send_unpin::<AtomicFile>();
}

/// The target keeps its mode as it is when it is replaced, not as it was
/// when the file was created: a permission tightened meanwhile holds.
#[cfg(unix)]
#[tokio::test]
async fn a_mode_changed_after_create_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("mode-after-create");
    let target = dir.0.join("secret");
    std::fs::write(&target, "old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = AtomicFile::create(&target).await.unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    file.write_all(b"new").await.unwrap();
    file.commit().await.unwrap();
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
}
