//! `http-daemon` under a pretend systemd: the test binds the notify socket
//! (a Unix datagram socket in a temporary directory, or an abstract one)
//! or the listening socket, runs the daemon as a child process, and reads
//! what it says. Loopback and temporary directories only; every child is
//! killed and reaped even when an assertion fails; every wait is bounded.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: only a hang gets near it.
const HANG: Duration = Duration::from_secs(60);

/// Pings every 100 ms.
const WATCHDOG_USEC: &str = "200000";

/// A running `http-daemon`: killed and reaped when dropped.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("http-daemon starts");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its first line: `http-daemon: listening on http://ADDR (HOW)`.
    fn listening(&self) -> (SocketAddr, String) {
        let line = self
            .stdout
            .recv_timeout(HANG)
            .unwrap_or_else(|_| panic!("no first line; stderr: {}", self.stderr()));
        let rest = line
            .strip_prefix("http-daemon: listening on http://")
            .unwrap_or_else(|| panic!("{line}"));
        let (addr, how) = rest.split_once(' ').unwrap();
        (addr.parse().unwrap(), how.to_owned())
    }

    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        while start.elapsed() < HANG {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("http-daemon did not exit; stderr: {}", self.stderr());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pretend systemd's end of the notify protocol.
struct NotifySocket {
    socket: UnixDatagram,
    /// Where it is, for `NOTIFY_SOCKET` (kept alive with the directory).
    address: String,
    _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    fn in_temp_dir() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            socket,
            address: path.to_str().unwrap().to_owned(),
            _dir: Some(dir),
        }
    }

    /// The next message, one line a state; `None` after `wait` in silence.
    fn recv(&self, wait: Duration) -> Option<Vec<String>> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Every state received until `done` holds of those received so far.
    fn until(&self, states: &mut Vec<String>, done: impl Fn(&[String]) -> bool) {
        let start = Instant::now();
        while !done(states) {
            assert!(start.elapsed() < HANG, "not within {HANG:?}: {states:?}");
            if let Some(message) = self.recv(Duration::from_millis(200)) {
                states.extend(message);
            }
        }
    }

    /// Every state received until the child has exited and the socket is
    /// quiet.
    fn rest(&self, states: &mut Vec<String>, daemon: &mut Running) -> ExitStatus {
        let status = daemon.exit();
        while let Some(message) = self.recv(Duration::from_millis(200)) {
            states.extend(message);
        }
        status
    }
}

fn http_daemon() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_http-daemon"));
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        command.env_remove(var);
    }
    command.args(["--addr", "127.0.0.1:0"]);
    command
}

fn under_systemd(notify: &NotifySocket, args: &[&str]) -> Command {
    let mut command = http_daemon();
    command
        .args(args)
        .env("NOTIFY_SOCKET", &notify.address)
        .env("WATCHDOG_USEC", WATCHDOG_USEC);
    command
}

/// `GET path` on a new connection: the answer's status line.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn position(states: &[String], what: impl Fn(&str) -> bool) -> Option<usize> {
    states.iter().position(|s| what(s))
}

fn count(states: &[String], state: &str) -> usize {
    states.iter().filter(|s| *s == state).count()
}

#[test]
fn systemd_hears_ready_pings_stopping_and_extend_timeout_in_order_then_the_exit() {
    let notify = NotifySocket::in_temp_dir();
    let mut daemon = Running::start(under_systemd(&notify, &["--drain", "0.3", "--grace", "5"]));
    let (addr, how) = daemon.listening();
    assert_eq!(how, "(bound)");
    let mut states = Vec::new();
    notify.until(&mut states, |s| {
        position(s, |x| x == "READY=1").is_some_and(|ready| count(&s[ready..], "WATCHDOG=1") >= 3)
    });
    assert_eq!(get(addr, "/ready"), "HTTP/1.1 200 OK");

    daemon.sigterm();
    let status = notify.rest(&mut states, &mut daemon);
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());

    let ready = position(&states, |s| s == "READY=1").unwrap();
    let stopping = position(&states, |s| s == "STOPPING=1").expect("STOPPING=1");
    let extend = position(&states, |s| s.starts_with("EXTEND_TIMEOUT_USEC=")).unwrap();
    assert!(ready < stopping && stopping < extend, "{states:?}");
    assert!(
        count(&states[ready..stopping], "WATCHDOG=1") >= 3,
        "{states:?}"
    );
    assert_eq!(count(&states, "READY=1"), 1, "{states:?}");
    assert_eq!(count(&states, "STOPPING=1"), 1, "{states:?}");
    // The first extension covers the drain, the grace period and the exit:
    // more than 5.3 s, less than 10 s.
    let usec: u64 = states[extend]["EXTEND_TIMEOUT_USEC=".len()..]
        .parse()
        .unwrap();
    assert!((5_300_000..10_000_000).contains(&usec), "{usec}");
    // The drain said so, and the shutdown's progress came after it.
    assert!(
        states[stopping..]
            .iter()
            .any(|s| s.starts_with("STATUS=draining")),
        "{states:?}"
    );
    let progress = position(&states, |s| s.starts_with("STATUS=stopping (SIGTERM)"))
        .expect("the shutdown's progress");
    assert!(progress > stopping, "{states:?}");
    assert!(
        states[progress..]
            .iter()
            .any(|s| s.starts_with("EXTEND_TIMEOUT_USEC=")),
        "the grace period extends the timeout: {states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("STATUS=stopped (SIGTERM)"),
        "{states:?}"
    );
}

#[test]
fn a_failed_subsystem_stops_the_watchdog_pings_while_the_daemon_serves_on() {
    let notify = NotifySocket::in_temp_dir();
    let mut daemon = Running::start(under_systemd(&notify, &["--fail-after", "0.5"]));
    let (addr, _) = daemon.listening();
    let mut states = Vec::new();
    notify.until(&mut states, |s| count(s, "WATCHDOG=1") >= 2);
    // Pings every 100 ms until the failure; then none, though the daemon
    // still runs and answers (systemd's watchdog would restart it).
    let start = Instant::now();
    let mut quiet = false;
    while !quiet && start.elapsed() < HANG {
        match notify.recv(Duration::from_millis(1500)) {
            Some(message) => states.extend(message),
            None => quiet = true,
        }
    }
    assert!(quiet, "the pings never stopped: {states:?}");
    assert!(daemon.is_running(), "{}", daemon.stderr());
    assert_eq!(get(addr, "/"), "HTTP/1.1 200 OK");
    assert!(
        daemon.stderr().contains("no more WATCHDOG=1"),
        "{}",
        daemon.stderr()
    );

    daemon.sigterm();
    let pinged = states.len();
    let status = notify.rest(&mut states, &mut daemon);
    assert_eq!(status.code(), Some(1), "a subsystem failed");
    assert_eq!(
        count(&states[pinged..], "WATCHDOG=1"),
        0,
        "pinged again: {states:?}"
    );
    assert!(
        states[pinged..].contains(&"STOPPING=1".to_owned()),
        "{states:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_notify_socket_is_reached_too() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "cancel-scope-test-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = NotifySocket {
        socket: UnixDatagram::bind_addr(&addr).unwrap(),
        address: format!("@{name}"),
        _dir: None,
    };
    let mut daemon = Running::start(under_systemd(&notify, &[]));
    let _ = daemon.listening();
    let mut states = Vec::new();
    notify.until(&mut states, |s| s.contains(&"READY=1".to_owned()));
    daemon.sigterm();
    let status = notify.rest(&mut states, &mut daemon);
    assert!(status.success(), "{}", daemon.stderr());
    assert!(states.contains(&"STOPPING=1".to_owned()), "{states:?}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_complains() {
    let notify = NotifySocket::in_temp_dir();
    let mut command = http_daemon();
    command.env("WATCHDOG_USEC", WATCHDOG_USEC);
    let mut daemon = Running::start(command);
    let (addr, _) = daemon.listening();
    assert_eq!(get(addr, "/ready"), "HTTP/1.1 200 OK");
    daemon.sigterm();
    let mut states = Vec::new();
    let status = notify.rest(&mut states, &mut daemon);
    assert!(status.success(), "{}", daemon.stderr());
    assert_eq!(states, Vec::<String>::new());
    assert!(!daemon.stderr().contains("NOTIFY_SOCKET"));
}

/// `http-daemon` with `listener` as its fd 3, `LISTEN_FDS=1` and, when
/// `own_pid`, its own pid as `LISTEN_PID` (set by a shell that then execs
/// it, as systemd sets it after its fork).
fn activated(listener: &TcpListener, own_pid: bool) -> Command {
    let fd = listener.as_raw_fd();
    let daemon = env!("CARGO_BIN_EXE_http-daemon");
    let mut command = Command::new("sh");
    let script = if own_pid {
        r#"LISTEN_PID=$$ exec "$0" "$@""#
    } else {
        r#"LISTEN_PID=1 exec "$0" "$@""#
    };
    command
        .args(["-c", script, daemon, "--addr", "127.0.0.1:0"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: dup2 and fcntl are async-signal-safe, as a pre_exec closure
    // must be.
    unsafe {
        command.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) // keep it across exec
            } else {
                libc::dup2(fd, 3) // the copy is not close-on-exec
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

#[test]
fn a_listener_passed_as_fd_3_is_served_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = Running::start(activated(&listener, true));
    let (addr, how) = daemon.listening();
    assert_eq!(how, "(socket-activated)");
    assert_eq!(addr, listener.local_addr().unwrap());
    assert_eq!(get(addr, "/"), "HTTP/1.1 200 OK");
    assert_eq!(get(addr, "/ready"), "HTTP/1.1 200 OK");
    daemon.sigterm();
    assert!(daemon.exit().success(), "{}", daemon.stderr());
}

#[test]
fn a_listener_passed_to_another_pid_is_not_taken() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = Running::start(activated(&listener, false));
    let (addr, how) = daemon.listening();
    assert_eq!(how, "(bound)");
    assert_ne!(addr, listener.local_addr().unwrap());
    daemon.sigterm();
    assert!(daemon.exit().success(), "{}", daemon.stderr());
}

#[test]
fn a_daemon_whose_setup_fails_never_says_ready() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let notify = NotifySocket::in_temp_dir();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = under_systemd(&notify, &[]);
    command.args(["--addr", &addr]); // in use: the bind fails
    let mut daemon = Running::start(command);
    let mut states = Vec::new();
    let status = notify.rest(&mut states, &mut daemon);
    assert_eq!(status.code(), Some(1), "{}", daemon.stderr());
    assert!(
        daemon.stderr().contains("/http failed"),
        "{}",
        daemon.stderr()
    );
    assert!(!states.contains(&"READY=1".to_owned()), "{states:?}");
    assert!(states.contains(&"STOPPING=1".to_owned()), "{states:?}");
}
