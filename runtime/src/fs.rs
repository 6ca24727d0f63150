//! Files that are never seen half-written: [`AtomicFile`].
//!
//! `AsyncWriteExt::write_all` is not cancel-safe: a cancellation, or the
//! abort at the end of a grace period, stops it part way, and a file
//! written in place is left torn. An [`AtomicFile`] is written beside its
//! target and renamed over it in one step, the leak "half-written files" of
//! a daemon that shuts down, closed.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A file written to a temporary file in its target's directory and
/// renamed over the target by [`commit`](Self::commit): readers of the
/// target see its old content or the whole new one, never a part.
///
/// - It implements [`AsyncWrite`] (it is `Unpin` and `Send`): write to it
///   with `tokio::io::AsyncWriteExt`.
/// - [`commit`](Self::commit) flushes, syncs the data, renames the
///   temporary file over the target and syncs the directory, as one step
///   that a cancellation does not tear (see there).
/// - Dropped without a commit (an error, a cancellation, an abort), the
///   temporary file is removed and the target keeps what it had.
/// - A target that exists keeps its permissions (Unix mode bits) when it is
///   replaced; its owner and other metadata are the new file's. A symbolic
///   link at the target's path is replaced by the file, not followed.
///
/// ```
/// # extern crate cancel_scope_runtime as cancel_scope;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use cancel_scope::fs::AtomicFile;
/// use tokio::io::AsyncWriteExt;
///
/// let path = std::env::temp_dir().join(format!("atomic-doc-{}.txt", std::process::id()));
/// tokio::fs::write(&path, "old\n").await?;
///
/// let mut file = AtomicFile::create(&path).await?;
/// file.write_all(b"new, but not ").await?;
/// drop(file); // cancelled half-way: the target is untouched
/// assert_eq!(tokio::fs::read_to_string(&path).await?, "old\n");
///
/// let mut file = AtomicFile::create(&path).await?;
/// file.write_all(b"new\n").await?;
/// file.commit().await?;
/// assert_eq!(tokio::fs::read_to_string(&path).await?, "new\n");
/// # tokio::fs::remove_file(&path).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` once `commit` has taken it.
    file: Option<tokio::fs::File>,
    /// The temporary file, while it is this value's to remove.
    temp: Option<PathBuf>,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates a temporary file beside `path` (same directory, a name that
    /// starts with `.` and the target's name), to be renamed over `path` by
    /// [`commit`](Self::commit). `path` is not touched until then.
    ///
    /// # Errors
    ///
    /// Each says what went wrong and where: `path` names a directory
    /// (`IsADirectory`), its directory does not exist (`NotFound`) or is
    /// not one (`NotADirectory`), the temporary file cannot be created there
    /// (`PermissionDenied` for a read-only directory, or what the OS said).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cancel_scope::fs::AtomicFile;
    /// let err = AtomicFile::create("/nonexistent-dir/out.txt").await.unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// assert!(err.to_string().contains("/nonexistent-dir"));
    /// # }
    /// ```
    pub async fn create(path: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let target = path.as_ref().to_path_buf();
        // The value is made in the blocking task: if this future is dropped
        // meanwhile, the task's output is dropped, and with it the file.
        tokio::task::spawn_blocking(move || {
            let (file, temp) = create_temp(&target)?;
            Ok(AtomicFile {
                file: Some(tokio::fs::File::from_std(file)),
                temp: Some(temp),
                target,
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The target's path, as given to [`create`](Self::create).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let path = std::env::temp_dir().join(format!("atomic-path-{}", std::process::id()));
    /// let file = cancel_scope::fs::AtomicFile::create(&path).await?;
    /// assert_eq!(file.path(), path);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Makes the written content the target's: flushes what was written,
    /// syncs the file's data to disk, renames it over the target, and (on
    /// Unix) syncs the directory, so the rename survives a crash too.
    ///
    /// A cancellation does not tear it. Inside a `#[cancellable]` fn the
    /// commit is [`shield`](crate::shield)ed: a cancellation of the fn's
    /// token while it runs takes effect after it, so the fn sees its
    /// result. The sync, the rename and the directory's sync run as one
    /// blocking task: once the flush is done, dropping this future (an
    /// abort, a `select!` that picked another branch) no longer stops
    /// them, and the target is replaced a moment later; dropped before
    /// that, the target is untouched and the temporary file removed.
    ///
    /// # Errors
    ///
    /// A failed write (reported by the flush), sync or rename, with the
    /// paths; the temporary file is removed and the target untouched. A
    /// failed sync of the directory after the rename says so (the target
    /// has the new content then).
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let path = std::env::temp_dir().join(format!("atomic-commit-{}", std::process::id()));
    /// let mut file = cancel_scope::fs::AtomicFile::create(&path).await?;
    /// file.write_all(b"42\n").await?;
    /// file.commit().await?;
    /// assert_eq!(std::fs::read(&path)?, b"42\n");
    /// # std::fs::remove_file(&path)?;
    /// # Ok(()) }
    /// ```
    pub async fn commit(mut self) -> io::Result<()> {
        crate::shield(async move {
            let mut file = self.file.take().expect("taken only by commit");
            let temp = self.temp.clone().expect("removed only by drop");
            std::future::poll_fn(|cx| Pin::new(&mut file).poll_flush(cx))
                .await
                .map_err(|e| context(e, format_args!("cannot write {}", temp.display())))?;
            let file = file.into_std().await;
            // From here the blocking task owns the temporary file.
            self.temp = None;
            let target = self.target.clone();
            tokio::task::spawn_blocking(move || replace(&file, &temp, &target))
                .await
                .map_err(io::Error::other)?
        })
        .await
    }
}

/// Creates the temporary file for `target`, after checking where it goes.
fn create_temp(target: &Path) -> io::Result<(std::fs::File, PathBuf)> {
    let fail = |e: io::Error, what: std::fmt::Arguments<'_>| {
        context(e, format_args!("cannot write {}: {what}", target.display()))
    };
    let Some(name) = target.file_name() else {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "no file name");
        return Err(fail(e, format_args!("not a file's path")));
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let old = match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => {
            let e = io::Error::new(io::ErrorKind::IsADirectory, "is a directory");
            return Err(fail(e, format_args!("it is a directory")));
        }
        Ok(meta) => Some(meta),
        Err(_) => None,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(fail(
                e,
                format_args!("{} is not a directory", dir.display()),
            ));
        }
        Ok(_) => {}
        Err(e) => {
            return Err(fail(e, format_args!("its directory {}", dir.display())));
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => {
                if let Some(old) = old {
                    // Best effort: the content matters more than the mode.
                    let _ = file.set_permissions(old.permissions());
                }
                return Ok((file, temp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(fail(e, format_args!("creating {}", temp.display())));
            }
        }
    }
}

/// Syncs `temp`, renames it over `target` and syncs their directory; on a
/// failure before the rename, removes `temp`.
fn replace(file: &std::fs::File, temp: &Path, target: &Path) -> io::Result<()> {
    // The target's mode as it is now (it may have changed since `create`,
    // which copied it so that the content was never readable more widely).
    if let Ok(now) = std::fs::metadata(target) {
        let _ = file.set_permissions(now.permissions());
    }
    let renamed = file.sync_all().and_then(|()| std::fs::rename(temp, target));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(temp);
        return Err(context(
            e,
            format_args!(
                "cannot replace {} with {}",
                target.display(),
                temp.display()
            ),
        ));
    }
    #[cfg(unix)]
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| {
                context(
                    e,
                    format_args!(
                        "{} was replaced, but syncing {} failed",
                        target.display(),
                        dir.display()
                    ),
                )
            })?;
    }
    Ok(())
}

/// `e`, with what was being done and where said first.
fn context(e: io::Error, what: std::fmt::Arguments<'_>) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl AsyncWrite for AtomicFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.file()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.file()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.file()).poll_shutdown(cx)
    }
}

impl AtomicFile {
    fn file(&mut self) -> &mut tokio::fs::File {
        self.file.as_mut().expect("taken only by commit")
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            drop(self.file.take());
            // One unlink: quick, and done before the drop returns, so no
            // temporary file outlives the value.
            let _ = std::fs::remove_file(temp);
        }
    }
}
