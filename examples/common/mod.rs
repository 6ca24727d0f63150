//! What the examples share: their command-line flags, their `main`, and
//! durations printed for people. Each example uses a subset of it (the HTTP
//! example, a package of its own, includes this file too).
#![allow(dead_code)]

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// `1.50s`, `250.0ms`, `42µs`.
pub fn human(d: Duration) -> String {
    if d.as_secs_f64() >= 0.9995 {
        format!("{:.2}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{}µs", d.as_micros())
    }
}

/// The value of the example's one flag, given as `--name <value>` or
/// `--name=<value>`: `Ok(None)` when it is absent, `Err` with the usage for
/// anything else. `-h` / `--help` prints the usage on stdout and exits 0.
pub fn flag(name: &str, usage: &str) -> Result<Option<String>, String> {
    let long = format!("--{name}");
    let mut value = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == long {
            let v = args
                .next()
                .ok_or(format!("{long} needs a value\n{usage}"))?;
            value = Some(v);
        } else if arg == "-h" || arg == "--help" {
            println!("{usage}");
            std::process::exit(0);
        } else if let Some(v) = arg.strip_prefix(&format!("{long}=")) {
            value = Some(v.to_owned());
        } else {
            return Err(format!("unknown argument `{arg}`\n{usage}"));
        }
    }
    Ok(value)
}

/// The value of the example's one flag as a number of seconds (fractions
/// allowed): `Ok(None)` when it is absent.
pub fn seconds_flag(name: &str, usage: &str) -> Result<Option<Duration>, String> {
    let Some(value) = flag(name, usage)? else {
        return Ok(None);
    };
    seconds(&format!("--{name}"), &value)
        .map(Some)
        .map_err(|e| format!("{e}\n{usage}"))
}

/// `value`, the value of `flag`, as a number of seconds (fractions allowed).
pub fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or(format!("{flag}: `{value}` is not a number of seconds"))
}

/// One command-line argument as a flag and, for `--flag=value`, its value.
pub fn split_flag(arg: String) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
        None => (arg, None),
    }
}

/// The `main` of an example called `name` whose arguments parsed to
/// `parsed` (`Ok(None)` for `--help`): prints the usage and exits 0 for
/// `--help`, the error and the usage on stderr with exit code 2 for a bad
/// argument; otherwise runs `run` on a Tokio runtime and exits with the code
/// it returns. Not `#[tokio::main]`: the runtime is shut down with a
/// timeout, so a stuck blocking thread cannot keep the process alive.
pub fn main_with<C, F: Future<Output = u8>>(
    name: &str,
    usage: &str,
    parsed: Result<Option<C>, String>,
    run: impl FnOnce(C) -> F,
) -> ExitCode {
    let config = match parsed {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let code = runtime.block_on(run(config));
    runtime.shutdown_timeout(Duration::from_millis(500));
    ExitCode::from(code)
}

/// The parsed arguments, or the error and the usage on stderr and exit code 2.
pub fn args_or_exit<T>(parsed: Result<T, String>) -> T {
    parsed.unwrap_or_else(|msg| {
        eprintln!("{msg}");
        std::process::exit(2);
    })
}
