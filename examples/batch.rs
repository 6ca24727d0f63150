//! Pattern 3, a batch in a fail-fast `Scope`.
//!
//! ```sh
//! cargo run --example batch                      # input #5 is corrupt
//! cargo run --example batch -- --corrupt 2       # another one
//! cargo run --example batch -- --corrupt none    # a clean batch
//! ```
//!
//! Every input is a task of one `Scope::new().fail_fast()`. Each task is a
//! `#[cancellable]` fn that stages its output chunk by chunk and, on cancel,
//! discards what it staged. The first task that fails cancels the scope's
//! token, so its siblings stop at once and clean up instead of running to the
//! end; `join_all` gives the results back in spawn order, so they are printed
//! against their inputs.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use cancel_scope::{CancelReason, Scope, TaskError, cancellable, on_cancel};

#[path = "common/mod.rs"]
mod common;

/// One input of the batch: a name and how many chunks of work it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Its name.
    pub name: String,
    /// How many chunks it has; each takes [`Config::chunk`].
    pub chunks: u32,
    /// The chunk at which it turns out to be corrupt, if it is.
    pub corrupt_at: Option<u32>,
}

/// What to run; `main` sets `corrupt` from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which input is corrupt (its index), if any.
    pub corrupt: Option<usize>,
    /// How long one chunk of work takes.
    pub chunk: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            corrupt: Some(5),
            chunk: Duration::from_millis(20),
        }
    }
}

impl Config {
    /// The batch: short and long inputs mixed; the corrupt one fails at its
    /// third chunk.
    pub fn inputs(&self) -> Vec<Input> {
        const INPUTS: [(&str, u32); 8] = [
            ("january.csv", 2),
            ("february.csv", 3),
            ("march.csv", 60),
            ("april.csv", 1),
            ("may.csv", 45),
            ("june.csv", 4),
            ("july.csv", 80),
            ("august.csv", 2),
        ];
        INPUTS
            .iter()
            .enumerate()
            .map(|(i, &(name, chunks))| Input {
                name: name.to_owned(),
                chunks,
                corrupt_at: (self.corrupt == Some(i)).then_some(2.min(chunks - 1)),
            })
            .collect()
    }
}

/// The result of processing an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// A checksum over its chunks.
    pub checksum: u64,
}

/// Why an input produced no output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// It is corrupt: the fatal error that fails the batch.
    Fatal(String),
    /// A sibling failed first; it stopped after `done` chunks and its
    /// cleanup discarded what it had staged.
    Cancelled {
        /// Chunks it had processed.
        done: u32,
        /// Its cleanup discarded the staged output.
        discarded: bool,
        /// Why: which sibling failed, as its `Cancelled` says.
        why: CancelReason,
    },
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Fatal(why) => write!(f, "FAILED: {why}"),
            JobError::Cancelled {
                done,
                discarded,
                why,
            } => {
                write!(f, "cancelled after {done} chunks ({why})")?;
                if *discarded {
                    f.write_str(", staged output discarded")?;
                }
                Ok(())
            }
        }
    }
}

/// The checksum a successful job computes for `input`: the tests check the
/// outputs against it.
pub fn expected_checksum(input: &Input) -> u64 {
    (0..input.chunks).fold(0xcbf2_9ce4_8422_2325, |sum, chunk| {
        chunk_checksum(sum, &input.name, chunk)
    })
}

fn chunk_checksum(sum: u64, name: &str, chunk: u32) -> u64 {
    name.bytes().chain(chunk.to_le_bytes()).fold(sum, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a job has done so far; its cleanup writes here too.
#[derive(Default)]
struct Progress {
    done: u32,
    discarded: bool,
}

/// Processes `input` chunk by chunk, staging the output.
#[cancellable]
async fn process(
    input: &Input,
    chunk: Duration,
    progress: &mut Progress,
) -> Result<Output, String> {
    // Setup: the staging area for the output.
    let mut staged: Vec<u64> = Vec::with_capacity(input.chunks as usize);
    on_cancel! {
        // A sibling failed: throw the partial output away.
        staged.clear();
        tokio::task::yield_now().await;
        progress.discarded = true;
    }
    let mut sum = 0xcbf2_9ce4_8422_2325;
    for n in 0..input.chunks {
        tokio::time::sleep(chunk).await;
        if input.corrupt_at == Some(n) {
            return Err(format!("chunk {n} is corrupt"));
        }
        sum = chunk_checksum(sum, &input.name, n);
        staged.push(sum);
        progress.done = n + 1;
    }
    Ok(Output { checksum: sum })
}

/// What happened.
#[derive(Debug)]
pub struct Report {
    /// The inputs, in order.
    pub inputs: Vec<Input>,
    /// One result per input, in the same order.
    pub results: Vec<Result<Result<Output, JobError>, TaskError>>,
    /// How long the batch took.
    pub took: Duration,
}

/// Runs the batch and prints each input with its result to `out`.
pub async fn run(config: &Config, out: &mut impl Write) -> io::Result<Report> {
    let inputs = config.inputs();
    let mut scope = Scope::new().fail_fast();
    let started = Instant::now();
    for input in &inputs {
        let (input, chunk) = (input.clone(), config.chunk);
        scope.spawn(move |token| async move {
            let mut progress = Progress::default();
            match process(token, &input, chunk, &mut progress).await {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(why)) => Err(JobError::Fatal(why)),
                Err(cancelled) => Err(JobError::Cancelled {
                    done: progress.done,
                    discarded: progress.discarded,
                    why: cancelled.reason(),
                }),
            }
        });
    }
    let results = scope.join_all().await;
    let took = started.elapsed();

    let longest = inputs.iter().map(|i| i.chunks).max().unwrap_or(0);
    match config.corrupt {
        Some(i) => writeln!(
            out,
            "batch: {} inputs, fail fast; input #{i} is corrupt",
            inputs.len()
        )?,
        None => writeln!(
            out,
            "batch: {} inputs, fail fast; none is corrupt",
            inputs.len()
        )?,
    }
    writeln!(out, "  #  input          chunks  result")?;
    let (mut ok, mut failed, mut cancelled) = (0, 0, 0);
    for (i, (input, result)) in inputs.iter().zip(&results).enumerate() {
        let shown = match result {
            Ok(Ok(output)) => {
                ok += 1;
                format!("ok, checksum {:016x}", output.checksum)
            }
            Ok(Err(e @ JobError::Fatal(_))) => {
                failed += 1;
                format!("{e}  <- cancels the rest")
            }
            Ok(Err(e)) => {
                cancelled += 1;
                e.to_string()
            }
            Err(e) => {
                failed += 1;
                e.to_string()
            }
        };
        writeln!(
            out,
            "  {i}  {:<14} {:>6}  {shown}",
            input.name, input.chunks
        )?;
    }
    writeln!(
        out,
        "summary: batch took {:.0}ms: {ok} ok, {failed} failed, {cancelled} cancelled \
         (the longest input alone is {}ms of work)",
        took.as_secs_f64() * 1e3,
        u128::from(longest) * config.chunk.as_millis(),
    )?;
    Ok(Report {
        inputs,
        results,
        took,
    })
}

/// `--corrupt <index>` or `--corrupt none`.
fn parse_args() -> Result<Config, String> {
    const USAGE: &str = "usage: batch [--corrupt <index 0-7> | --corrupt none]   (default 5)";
    let mut config = Config::default();
    if let Some(value) = common::flag("corrupt", USAGE)? {
        config.corrupt = match value.as_str() {
            "none" => None,
            _ => match value.parse::<usize>() {
                Ok(i) if i < config.inputs().len() => Some(i),
                _ => {
                    return Err(format!(
                        "--corrupt: `{value}` is not an index 0-7 or `none`\n{USAGE}"
                    ));
                }
            },
        };
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = common::args_or_exit(parse_args());
    if let Err(e) = run(&config, &mut io::stdout()).await {
        eprintln!("batch: {e}");
        std::process::exit(1);
    }
}
