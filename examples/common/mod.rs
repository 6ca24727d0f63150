//! What the examples share: their one command-line flag, and durations
//! printed for people. Each example uses a subset of it.
#![allow(dead_code)]

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
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(Some)
        .ok_or(format!(
            "--{name}: `{value}` is not a number of seconds\n{usage}"
        ))
}

/// The parsed arguments, or the error and the usage on stderr and exit code 2.
pub fn args_or_exit<T>(parsed: Result<T, String>) -> T {
    parsed.unwrap_or_else(|msg| {
        eprintln!("{msg}");
        std::process::exit(2);
    })
}
