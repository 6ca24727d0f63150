//! Socket activation: the listening sockets systemd (or
//! `systemd-socket-activate`, or a test) passes a daemon, as Tokio
//! listeners; binding instead when there are none.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, ToSocketAddrs};

/// Whether this process took its inherited sockets already.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening sockets systemd passed this process (`LISTEN_FDS`, for
/// this process's `LISTEN_PID`, named by `LISTEN_FDNAMES`), to take as
/// Tokio listeners, or to bind when there are none: the same code runs
/// under a `.socket` unit and on its own.
///
/// Taken once per process: a second [`take`](Self::take) finds none, so no
/// socket is owned twice. Each one is made close-on-exec (a child process
/// does not inherit it) and non-blocking. The `LISTEN_*` variables stay in
/// the environment (removing them is not thread-safe): a child process
/// ignores them, since `LISTEN_PID` is not its own. A socket not taken is
/// closed when the `Listeners` are dropped. On Unix, with the `systemd`
/// feature; elsewhere there are never any.
///
/// ```no_run
/// # extern crate cancel_scope_runtime as cancel_scope;
/// use cancel_scope::daemon::Listeners;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let mut listeners = Listeners::take()?;
/// // The socket named `http` (`FileDescriptorName=http` in the .socket
/// // unit), or a new one on port 8080 when the daemon runs on its own.
/// let http = listeners.tcp_or_bind(Some("http"), "127.0.0.1:8080").await?;
/// # drop(http);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Listeners {
    /// Each socket with its name.
    inherited: Vec<(String, Descriptor)>,
}

#[cfg(unix)]
type Descriptor = std::os::fd::OwnedFd;
/// Never any elsewhere.
#[cfg(not(unix))]
type Descriptor = std::convert::Infallible;

impl Listeners {
    /// Takes the sockets passed to this process; none when it was not
    /// socket-activated, or when they were taken already.
    ///
    /// # Errors
    /// When `LISTEN_PID`, `LISTEN_FDS` or `LISTEN_FDNAMES` are malformed,
    /// or a passed descriptor is not open.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let listeners = cancel_scope::daemon::Listeners::take()?;
    /// assert!(listeners.is_empty()); // not socket-activated
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take() -> io::Result<Listeners> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Ok(Listeners::default());
        }
        inherited()
    }

    /// How many sockets are left to take.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// let listeners = cancel_scope::daemon::Listeners::take()?;
    /// assert_eq!(listeners.len(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inherited.len()
    }

    /// No socket left to take.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// assert!(cancel_scope::daemon::Listeners::default().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the first passed TCP listener named `name` (its
    /// `LISTEN_FDNAMES` entry; `"unknown"` when systemd gave no names), or
    /// the first one at all for `None`. `Ok(None)` when there is none.
    ///
    /// # Errors
    /// When the socket named `name` is not a listening TCP socket.
    ///
    /// # Panics
    /// Outside a Tokio runtime with IO enabled.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let mut listeners = cancel_scope::daemon::Listeners::take()?;
    /// assert!(listeners.tcp(Some("http"))?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn tcp(&mut self, name: Option<&str>) -> io::Result<Option<TcpListener>> {
        #[cfg(unix)]
        if let Some(fd) = self.find(name, unix::Kind::Tcp)? {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            return TcpListener::from_std(listener).map(Some);
        }
        let _ = name;
        Ok(None)
    }

    /// [`tcp`](Self::tcp), or a new listener bound to `addr` when there is
    /// no passed one.
    ///
    /// # Errors
    /// As `tcp`, or when `addr` cannot be bound.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let mut listeners = cancel_scope::daemon::Listeners::take()?;
    /// let listener = listeners.tcp_or_bind(None, "127.0.0.1:0").await?;
    /// assert!(listener.local_addr()?.ip().is_loopback());
    /// # Ok(()) }
    /// ```
    pub async fn tcp_or_bind(
        &mut self,
        name: Option<&str>,
        addr: impl ToSocketAddrs,
    ) -> io::Result<TcpListener> {
        match self.tcp(name)? {
            Some(listener) => Ok(listener),
            None => TcpListener::bind(addr).await,
        }
    }

    /// Takes the first passed Unix-domain listener named `name`, or the
    /// first one at all for `None`. `Ok(None)` when there is none.
    ///
    /// # Errors
    /// When the socket named `name` is not a listening Unix stream socket.
    ///
    /// # Panics
    /// Outside a Tokio runtime with IO enabled.
    ///
    /// ```
    /// # extern crate cancel_scope_runtime as cancel_scope;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let mut listeners = cancel_scope::daemon::Listeners::take()?;
    /// assert!(listeners.unix(Some("control"))?.is_none());
    /// # Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn unix(&mut self, name: Option<&str>) -> io::Result<Option<tokio::net::UnixListener>> {
        match self.find(name, unix::Kind::Unix)? {
            Some(fd) => {
                let listener = std::os::unix::net::UnixListener::from(fd);
                listener.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(listener).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Removes the first socket named `name` (any for `None`) of `kind`.
    #[cfg(unix)]
    fn find(
        &mut self,
        name: Option<&str>,
        kind: unix::Kind,
    ) -> io::Result<Option<std::os::fd::OwnedFd>> {
        let mut found = None;
        for (i, (fd_name, fd)) in self.inherited.iter().enumerate() {
            let named = name.is_none_or(|n| n == fd_name);
            if named && unix::kind(fd)? == Some(kind) {
                found = Some(i);
                break;
            }
            if name.is_some() && named {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the passed socket `{fd_name}` is not a listening {kind:?} socket"),
                ));
            }
        }
        Ok(found.map(|i| self.inherited.remove(i).1))
    }
}

/// The passed sockets, read from the environment.
#[cfg(all(unix, feature = "systemd"))]
fn inherited() -> io::Result<Listeners> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // sd-notify checks `LISTEN_PID`, and that each descriptor is open, and
    // makes it close-on-exec. Asked for names when the sockets are not
    // ours, it finds them malformed (there are names, but no sockets).
    if sd_notify::listen_fds()?.len() == 0 {
        return Ok(Listeners::default());
    }
    let fds = sd_notify::listen_fds_with_names()?;
    let inherited = fds
        // SAFETY: these descriptors were passed to this process for it to
        // own (`LISTEN_PID` is its pid), they are open, and `TAKEN` makes
        // sure they are wrapped once.
        .map(|(fd, name)| (name, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();
    Ok(Listeners { inherited })
}

#[cfg(not(all(unix, feature = "systemd")))]
fn inherited() -> io::Result<Listeners> {
    Ok(Listeners::default())
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::mem::size_of;
    use std::os::fd::{AsRawFd, OwnedFd};

    /// What a passed socket can become.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Kind {
        Tcp,
        Unix,
    }

    /// `Some(kind)` for a listening stream socket of an address family we
    /// take; `None` for anything else (a datagram socket, a FIFO).
    pub(super) fn kind(fd: &OwnedFd) -> io::Result<Option<Kind>> {
        let fd = fd.as_raw_fd();
        let (Some(ty), Some(listening)) =
            (option(fd, libc::SO_TYPE)?, option(fd, libc::SO_ACCEPTCONN)?)
        else {
            return Ok(None); // not a socket
        };
        if ty != libc::SOCK_STREAM || listening == 0 {
            return Ok(None);
        }
        // SAFETY: an all-zero sockaddr_storage is a valid value, and
        // getsockname writes at most `len` bytes into it.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let r = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(match libc::c_int::from(addr.ss_family) {
            libc::AF_INET | libc::AF_INET6 => Some(Kind::Tcp),
            libc::AF_UNIX => Some(Kind::Unix),
            _ => None,
        })
    }

    /// An `int` socket option of `SOL_SOCKET`; `None` when `fd` is not a
    /// socket.
    fn option(fd: libc::c_int, name: libc::c_int) -> io::Result<Option<libc::c_int>> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is an int, and `len` says so.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        if r == 0 {
            return Ok(Some(value));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSOCK) => Ok(None),
            _ => Err(e),
        }
    }
}
