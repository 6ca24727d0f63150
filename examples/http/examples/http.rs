//! An HTTP server run by `cancel_scope::daemon`: in-flight requests finish
//! on shutdown, new connections are refused, nothing is cut.
//!
//! ```sh
//! cargo run --example http                       # a demo that ends by itself in about 1.5 s
//! cargo run --example http -- --run-for 30       # time to `curl` it, or Ctrl-C it
//! cargo run --example http -- --drain 3          # `/ready` answers 503 for 3 s first
//! ```
//!
//! It starts the server on 127.0.0.1, a few clients that keep it busy with
//! slow requests on keep-alive connections, shuts it down while requests are
//! in flight (after `--run-for`, or on Ctrl-C / SIGTERM), drains for
//! `--drain` (`GET /ready` answers 503, everything else is served on), tries
//! a new connection during the shutdown, and reports what both sides saw.
//!
//! `cargo run -p cancel-scope-example-http --bin http-daemon` runs the same
//! server as a daemon of its own, for systemd (see docs/deploying.md).
//!
//! Exit codes: 0 nothing cut and new connections refused, 1 otherwise,
//! 2 bad arguments, 3 the grace period elapsed, 130 a second signal.

use std::process::ExitCode;

use cancel_scope_example_http::{DemoConfig, demo};

// The examples' shared helpers (this package is separate only so that hyper
// is never built for the others).
#[path = "../../common/mod.rs"]
mod common;

const USAGE: &str = "\
usage: http [--run-for <secs>] [--clients <n>] [--drain <secs>]

  --run-for <secs>  how long the clients keep the server busy before it shuts down (default 1)
  --clients <n>     how many clients (default 4)
  --drain <secs>    from the signal, how long /ready answers 503 while everything is served on (default 0.5)

exit codes: 0 nothing cut, 1 something cut, 2 bad arguments, 3 grace period elapsed, 130 second signal";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<DemoConfig>, String> {
    let mut config = DemoConfig::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, value) = common::split_flag(arg);
        if !["--run-for", "--clients", "--drain"].contains(&flag.as_str()) {
            return Err(format!("unknown argument `{flag}`"));
        }
        let value = value
            .or_else(|| args.next())
            .ok_or(format!("{flag} needs a value"))?;
        if flag == "--clients" {
            config.clients = value
                .parse()
                .map_err(|_| format!("--clients: `{value}` is not a number"))?;
        } else if flag == "--drain" {
            config.drain = common::seconds(&flag, &value)?;
        } else {
            config.run_for = common::seconds(&flag, &value)?;
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    common::main_with(
        "http",
        USAGE,
        parse_args(std::env::args().skip(1)),
        |config| async move {
            match demo(&config, &mut std::io::stdout()).await {
                Ok(report) => report.code(),
                Err(e) => {
                    eprintln!("http: {e}");
                    1
                }
            }
        },
    )
}
