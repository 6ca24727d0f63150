//! The HTTP example's server as a daemon of its own, to run under systemd
//! (or Kubernetes): it speaks systemd's notify protocol when
//! `NOTIFY_SOCKET` is set (`READY=1` once it listens, `WATCHDOG=1`,
//! `STOPPING=1`, `EXTEND_TIMEOUT_USEC`), takes the listener systemd passes
//! (socket activation, `LISTEN_FDS`) or binds `--addr`, answers `GET /ready`
//! 200 while it serves and 503 from the first SIGTERM on, drains for
//! `--drain`, then shuts down within `--grace`. docs/deploying.md has the
//! unit files and a pod spec.
//!
//! ```sh
//! cargo run -p cancel-scope-example-http --bin http-daemon -- --addr 127.0.0.1:8080 --drain 5
//! ```
//!
//! Its first line on stdout says where it listens. Exit codes: the
//! daemon's (0 clean, 1 a subsystem failed, 3 the grace period elapsed,
//! 130 a second signal during the shutdown), 2 for bad arguments.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cancel_scope::daemon::{Daemon, Listeners, Subsystem};
use cancel_scope_example_http::{Stats, listener_subsystem};

#[path = "../../../common/mod.rs"]
mod common;

const USAGE: &str = "\
usage: http-daemon [--addr <ip:port>] [--grace <secs>] [--drain <secs>] [--fail-after <secs>]

  --addr <ip:port>     where to listen when systemd passed no socket (default 127.0.0.1:8080)
  --grace <secs>       how long the shutdown may take (default 5)
  --drain <secs>       from the first SIGTERM, how long /ready answers 503 while everything is served on (default 0)
  --fail-after <secs>  a subsystem fails after <secs> (the daemon serves on, its watchdog pings stop)

exit codes: 0 clean, 1 a subsystem failed, 2 bad arguments, 3 grace period elapsed, 130 second signal";

#[derive(Debug)]
struct Config {
    addr: SocketAddr,
    grace: Duration,
    drain: Duration,
    fail_after: Option<Duration>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        grace: Duration::from_secs(5),
        drain: Duration::ZERO,
        fail_after: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, value) = common::split_flag(arg);
        if !["--addr", "--grace", "--drain", "--fail-after"].contains(&flag.as_str()) {
            return Err(format!("unknown argument `{flag}`"));
        }
        let value = value
            .or_else(|| args.next())
            .ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                config.addr = value
                    .parse()
                    .map_err(|_| format!("--addr: `{value}` is not an ip:port"))?;
            }
            "--grace" => config.grace = common::seconds(&flag, &value)?,
            "--drain" => config.drain = common::seconds(&flag, &value)?,
            _ => config.fail_after = Some(common::seconds(&flag, &value)?),
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("http-daemon: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let grace = config.grace;
    Daemon::new("http")
        .grace(config.grace)
        .drain(config.drain)
        .catch_signals()
        .block_on(move |http| async move {
            let mut listeners = Listeners::take()?;
            let activated = !listeners.is_empty();
            let listener = listeners.tcp_or_bind(None, config.addr).await?;
            println!(
                "http-daemon: listening on http://{} ({})",
                listener.local_addr()?,
                if activated {
                    "socket-activated"
                } else {
                    "bound"
                }
            );
            http.start(listener_subsystem(
                listener,
                Arc::new(Stats::default()),
                grace,
            ));
            if let Some(after) = config.fail_after {
                http.start(
                    Subsystem::new("doomed", move |_| async move {
                        tokio::time::sleep(after).await;
                        Err::<(), _>("--fail-after elapsed")
                    })
                    .escalate(false),
                );
            }
            Ok::<(), io::Error>(())
        })
        .print_and_exit_code()
}
