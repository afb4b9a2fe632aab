//! `rustmq-etl`: the command-line tool of the rustmq-etl engine.
//!
//! - `validate --config PATH` checks a configuration file or directory and lists
//!   every problem;
//! - `explain --config PATH --input MESSAGES.jsonl [--now MS]` says, for every
//!   message, which modules would run in which order and why the others would not,
//!   without running any;
//! - `run --config PATH --input MESSAGES.jsonl` runs every message through the
//!   pipelines with the real modules and writes what becomes of it;
//! - `serve --config PATH --listen ADDR` does the same over HTTP, reloading the
//!   configuration and modules when they change;
//! - `test-module MODULE.wasm --input MESSAGES.jsonl` runs one module on
//!   messages and shows what it changed in each, or how it failed;
//! - `new-module NAME` creates a module crate on the SDK;
//! - `bench --config PATH --input MESSAGES.jsonl` measures a configuration on
//!   the user's messages.

/// mimalloc rather than the system allocator: messages are allocated by the
/// thread that reads them and freed by the engine's threads, which glibc's
/// allocator serves with locks and page faults (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `eprintln!` that does not panic when standard error cannot be written
/// (a full disk behind `2>`, a closed pipe): what cannot be said is lost,
/// and the exit code still tells how the command ended.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that does not panic when standard output cannot be written (a
/// reader that closed its pipe): the exit code still tells.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Standard output, locked, whose write errors name it: a reader that closed
/// its pipe (`explain … | head`) ends the command with "writing to standard
/// output: Broken pipe", not a bare "Broken pipe".
pub(crate) struct Stdout(std::io::StdoutLock<'static>);

impl Stdout {
    pub(crate) fn lock() -> Stdout {
        Stdout(std::io::stdout().lock())
    }

    fn named(e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("writing to standard output: {e}"))
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Stdout::named)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Stdout::named)
    }
}

mod bench;
mod checkpoint;
mod diff;
mod explain;
mod input;
mod new_module;
mod report;
mod run;
mod serve;
mod summary;
mod test_module;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustmq_etl_orchestrator::{
    BreakerSettings, DirectorySource, LoadError, LoadStep, ModuleSource as _, Options, Orchestrator,
};
use rustmq_etl_pool::{ArtifactCache, Pool, PoolConfig};

#[derive(Parser)]
#[command(
    name = "rustmq-etl",
    version,
    about = "Priority-based WebAssembly ETL pipelines for message brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration: exit 0 with a summary, or 1 with every error.
    Validate {
        /// A configuration file (.yaml, .yml, .json) or a directory of them.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Also load every module the configuration names from this
        /// directory (`<dir>/<module_id>.wasm`), compiled and started with its
        /// settings as `run` and `serve` would, and list each that fails.
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
    },
    /// Dry run: for each message, list the modules that would run and why the others would not.
    Explain {
        /// A configuration file (.yaml, .yml, .json) or a directory of them.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Messages as JSON Lines (`-` for standard input).
        #[arg(long, value_name = "MESSAGES.jsonl")]
        input: PathBuf,
        /// The clock for MessageAge rules, in milliseconds since the Unix epoch
        /// (default: the system clock, read once at start).
        #[arg(long, value_name = "MS", allow_negative_numbers = true)]
        now: Option<i64>,
    },
    /// Run messages through the pipelines with the real modules: delivered
    /// messages and dead letters out as JSON Lines, in input order, and a
    /// summary on standard error. Exit 0 when every message was accounted
    /// for, 1 on bad input lines (each reported, the rest processed), when it
    /// cannot start, or when a result (or, with --trace, a trace) could not be
    /// written, 143 or 130 when stopped by SIGTERM or Ctrl-C (after writing
    /// the results of the batch under way and saying which line to resume
    /// at; lines read ahead and not yet begun are left to that resume).
    Run {
        /// A configuration file (.yaml, .yml, .json) or a directory of them.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Messages as JSON Lines (`-` for standard input).
        #[arg(long, value_name = "MESSAGES.jsonl")]
        input: PathBuf,
        /// Where delivered messages go, as JSON Lines (default `-`: standard output).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Where dead letters go, as JSON Lines (default: with the delivered
        /// messages; they are on the dead-letter topic).
        #[arg(long, value_name = "FILE")]
        dead_letter: Option<PathBuf>,
        /// Where modules are: `<dir>/<module_id>.wasm` (default: `modules`,
        /// else `fixtures/modules`).
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
        /// Also write each message's trace to standard error, one JSON line each.
        #[arg(long)]
        trace: bool,
        /// Skip the input's lines before this one, and append to --output and
        /// --dead-letter files instead of replacing them: to resume a run that
        /// was stopped (it says from where).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = line_number)]
        start_line: usize,
        /// After each batch it writes, record in FILE how far the run got
        /// and how long its output files were; run the same command again
        /// after any stop — SIGKILL included — to resume exactly there, or
        /// to run lines added to the input since it finished. Needs --input
        /// and --output to be regular files, and --dead-letter too if dead
        /// letters go to a file of their own; remove FILE to start afresh.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Resume --checkpoint's run although the pipelines, the module
        /// files, --dead-letter-topic or the breaker's settings changed
        /// since it was written (without it, such a resume is refused): the
        /// lines done keep the results of what they ran with, the rest get
        /// the new.
        #[arg(long, requires = "checkpoint")]
        resume_with_changes: bool,
        /// With --checkpoint, flush the outputs to the disk before each
        /// checkpoint record, and the record before going on (`fdatasync`):
        /// the run then resumes exactly after a crash of the machine or a
        /// power loss too, not only after the end of its process. Costs a
        /// flush of each file per batch.
        #[arg(long, requires = "checkpoint")]
        sync: bool,
        /// Run messages on all engine threads at once, and others while one
        /// waits for a retry's delay; but which messages meet a circuit
        /// breaker that earlier ones opened then depends on timing.
        /// Without it each message runs to its end before the next starts,
        /// in input order, and the same input gives the same output.
        #[arg(long)]
        concurrent: bool,
        #[command(flatten)]
        engine: Engine,
    },
    /// Serve the pipelines over HTTP (docs/serve.md): messages in, results
    /// out, Prometheus metrics, live reload of the configuration and modules,
    /// graceful shutdown on SIGTERM or Ctrl-C.
    Serve {
        /// A configuration file (.yaml, .yml, .json) or a directory of them;
        /// watched for changes.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// The address to listen on (port 0 picks a free port; the log says
        /// which).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = listen_address)]
        listen: String,
        /// Also serve /health, /ready and /metrics on this address, on
        /// connections of their own (not counted in --max-connections) and
        /// through a shutdown's grace (where /ready answers 503): for probes
        /// and the scraper.
        #[arg(long, value_name = "ADDR", value_parser = listen_address)]
        admin_listen: Option<String>,
        /// Where modules are: `<dir>/<module_id>.wasm` (default: `modules`,
        /// else `fixtures/modules`); watched for changes.
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
        /// The largest request body accepted, in bytes (larger: 413).
        #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = at_least_one::<usize>)]
        max_request_bytes: usize,
        /// The most bytes the bodies of the requests being read and run
        /// may hold together, each taking room a KiB at a time as
        /// its bytes arrive; one that finds no more waits for it within its
        /// body timeout (then 503). At least --max-request-bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 256 << 20, value_parser = at_least_one::<usize>)]
        max_body_bytes_in_flight: usize,
        /// The most messages in one batch request (more: 413).
        #[arg(long, value_name = "COUNT", default_value_t = 4096, value_parser = at_least_one::<usize>)]
        max_batch: usize,
        /// The most client connections open at once; more wait to be
        /// accepted. At most 1048576 (2^20: a process's most open files on
        /// Linux by default, `fs.nr_open`).
        #[arg(long, value_name = "COUNT", default_value_t = 1024, value_parser = within(1usize, 1 << 20, "from 1 to 1048576"))]
        max_connections: usize,
        /// How long a client has to send a request's head (from connecting,
        /// or from the answer before), in milliseconds; then its connection
        /// is closed.
        #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = at_least_one::<u64>)]
        head_timeout_ms: u64,
        /// How long a client has to send a request's body once its head is
        /// in, in milliseconds (later: 408).
        #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = at_least_one::<u64>)]
        body_timeout_ms: u64,
        /// How long a client has to take an answer, in milliseconds: a write
        /// to a client that stops reading fails after this, closing its
        /// connection.
        #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = at_least_one::<u64>)]
        write_timeout_ms: u64,
        /// How long a shutdown waits for the requests in flight before it
        /// closes their connections, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 25)]
        shutdown_grace_seconds: u64,
        /// How long after SIGTERM or Ctrl-C the server goes on taking
        /// connections and serving them, /ready answering 503 (for a load
        /// balancer to stop sending), before the shutdown proper, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        shutdown_delay_seconds: u64,
        /// Do not watch the configuration and modules (reload with POST
        /// /v1/reload only).
        #[arg(long)]
        no_watch: bool,
        /// Log a line for each answer (target `rustmq_etl::access`, level
        /// info): the client's address, the request line, the status, the
        /// body's bytes and the time taken.
        #[arg(long)]
        access_log: bool,
        /// Answer POST /v1/reload with 403: nobody who reaches --listen can
        /// make the server reload (it still reloads when its files change,
        /// unless --no-watch).
        #[arg(long)]
        no_reload_endpoint: bool,
        #[command(flatten)]
        engine: Engine,
    },
    /// Run one module on messages and show, for each, what it changed (topic,
    /// key, headers, payload, timestamp) or how it failed, and every line it
    /// logs (on standard error; at most 32 a call). Exit 1 if any call
    /// failed, a line was not a message, or the module does not load.
    TestModule {
        /// The module (a .wasm file).
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// Messages as JSON Lines (`-` for standard input).
        #[arg(long, value_name = "MESSAGES.jsonl")]
        input: PathBuf,
        /// The module's custom_config, as in a pipeline's instance_config (JSON).
        #[arg(long, value_name = "JSON")]
        module_config: Option<String>,
        /// The time budget of each call, in milliseconds (default: a
        /// pipeline's default execution_timeout_ms).
        #[arg(long, value_name = "MS", value_parser = within(1u64, 3_600_000, "from 1 to 3600000 (an hour)"))]
        timeout_ms: Option<u64>,
        /// The instance's memory limit in bytes (default: a pipeline's default
        /// memory_limit_bytes).
        #[arg(long, value_name = "BYTES", value_parser = within(
            65_536usize,
            4 << 30,
            "from 65536 (one WebAssembly page) to 4294967296 (4 GiB)",
        ))]
        memory_limit_bytes: Option<usize>,
        /// One JSON line per message instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a module crate on the rustmq-etl SDK, with tests and sample
    /// messages, and print how to build and try it.
    NewModule {
        /// The module's name: its crate's name, and the `module_id` it is
        /// used by (copied to `<modules dir>/NAME.wasm`; Cargo builds it as
        /// NAME with `_` for `-`).
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The SDK crate to depend on (default: the crates/sdk of the checkout this binary was built from, else of the checkout holding the current directory).
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Measure a configuration on your messages: throughput, latency, and the
    /// time per pipeline, stage and module.
    Bench {
        /// A configuration file (.yaml, .yml, .json) or a directory of them.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Messages as JSON Lines (`-` for standard input), sent over and over.
        #[arg(long, value_name = "MESSAGES.jsonl")]
        input: PathBuf,
        /// Where modules are: `<dir>/<module_id>.wasm` (default: `modules`,
        /// else `fixtures/modules`).
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
        /// How long the throughput phase runs, and each one-message phase
        /// (through the engine's threads, then on the caller's) half that,
        /// at most 2 s (the traced passes before them, for the
        /// breakdown, run at least 2,000 messages however long they take:
        /// long with modules that time out).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = within(
            f64::MIN_POSITIVE,
            86_400.0,
            "a positive number of seconds up to a day",
        ))]
        seconds: f64,
        /// Messages per batch in the throughput phase.
        #[arg(long, value_name = "COUNT", default_value_t = 64, value_parser = within(1usize, 65_536, "from 1 to 65536"))]
        batch: usize,
        /// Threads sending batches (default: twice the engine's threads).
        #[arg(long, value_name = "COUNT", value_parser = within(1usize, 1024, "from 1 to 1024"))]
        callers: Option<usize>,
        #[command(flatten)]
        engine: Engine,
    },
}

/// The engine's settings a command line may change (docs/execution.md): the
/// dead-letter topic and every module occurrence's circuit breaker.
#[derive(Args, Debug, Clone)]
struct Engine {
    /// The topic dead letters are put on.
    #[arg(long, value_name = "TOPIC", default_value_t = Options::default().dead_letter_topic, value_parser = not_empty)]
    dead_letter_topic: String,
    /// Consecutive failed calls of a module (retries and its own error
    /// answers included) that open its circuit breaker: then every message
    /// reaching it fails `circuit_open` until the cool-down ends.
    #[arg(long = "breaker-failures", value_name = "N", default_value_t = BreakerSettings::default().failures, value_parser = at_least_one::<u32>)]
    failures: u32,
    /// How long an open breaker refuses calls before it lets one probe call
    /// through, in milliseconds.
    #[arg(long = "breaker-cool-down-ms", value_name = "MS", default_value_t = BreakerSettings::default().cool_down.as_millis() as u64)]
    cool_down_ms: u64,
    /// Keep compiled modules in this directory between runs, so that a
    /// module whose bytes did not change starts without compiling (default:
    /// $XDG_CACHE_HOME/rustmq-etl, else ~/.cache/rustmq-etl). It must be
    /// private to you: it is created with mode 0700, and one that others may
    /// write is refused.
    #[arg(long, value_name = "DIR", conflicts_with = "no_artifact_cache")]
    artifact_cache: Option<PathBuf>,
    /// The most the artifact cache keeps, in MiB: storing a compiled module
    /// past it removes the ones used the longest ago (a new module version
    /// is a new artifact, so the cache would otherwise grow with every one).
    #[arg(long, value_name = "MIB", default_value_t = ArtifactCache::DEFAULT_MAX_BYTES >> 20, conflicts_with = "no_artifact_cache")]
    artifact_cache_max_mib: u64,
    /// Compile every module afresh and keep nothing.
    #[arg(long)]
    no_artifact_cache: bool,
    /// Keep each engine thread on one CPU, and hand messages to the one on
    /// the sender's CPU unless another is less busy (Linux; only with an
    /// engine thread for every CPU the process may use, as by default): less
    /// CPU a message and a lower latency for a sender waiting on each
    /// message, on a machine this program has to itself, but a pinned thread
    /// cannot leave a CPU that another program keeps busy
    /// (docs/performance.md, "Pinned workers").
    #[arg(long)]
    pin_workers: bool,
}

/// Where compiled modules are kept between runs (docs/abi.md, "The artifact
/// cache").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cache {
    /// The user's cache directory, if there is one that can be used (else
    /// a warning, and nothing is kept), kept within this many bytes.
    Default(u64),
    /// This directory, kept within this many bytes; one that cannot be used
    /// stops the start.
    At(PathBuf, u64),
    /// None.
    Off,
}

impl Cache {
    /// `$XDG_CACHE_HOME/rustmq-etl`, else `$HOME/.cache/rustmq-etl` (absolute
    /// paths only, as the XDG specification asks).
    fn default_dir() -> Option<PathBuf> {
        let absolute = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        absolute("XDG_CACHE_HOME")
            .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
            .map(|dir| dir.join("rustmq-etl"))
    }

    /// The engine, with this cache. A default cache that cannot be used is
    /// a warning, and none is kept; a named one stops the start.
    fn pool(&self, pin_workers: bool, caller_threads: usize) -> anyhow::Result<Pool> {
        let (dir, artifact_cache_max_bytes) = match self {
            Cache::Off => (None, 0),
            Cache::At(dir, max_bytes) => (Some(dir.clone()), *max_bytes),
            Cache::Default(max_bytes) => (Cache::default_dir(), *max_bytes),
        };
        let start = |artifact_cache| {
            Pool::new(PoolConfig {
                artifact_cache,
                artifact_cache_max_bytes,
                pin_workers,
                caller_threads,
                ..PoolConfig::default()
            })
        };
        match start(dir) {
            Err(rustmq_etl_pool::StartError::ArtifactCache { dir, message })
                if matches!(self, Cache::Default(_)) =>
            {
                warn(&format!(
                    "the artifact cache {} cannot be used ({message}): every module is \
                     compiled afresh (--artifact-cache DIR names another, --no-artifact-cache \
                     keeps none)",
                    dir.display()
                ));
                start(None)
            }
            started => started,
        }
        .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e}"))
    }
}

/// The engine's settings a command gives [`start`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The orchestrator's options (its dead-letter topic, circuit breaker).
    pub options: Options,
    /// Where compiled modules are kept between runs.
    pub cache: Cache,
    /// `PoolConfig::pin_workers`.
    pub pin_workers: bool,
    /// `PoolConfig::caller_threads`: 1 for a command that runs modules on
    /// its own thread (`run` in order, `bench`), else 0.
    pub caller_threads: usize,
    /// Where [`start`] notes each module file it reads, if anywhere.
    pub modules_read: Option<ModulesRead>,
}

/// The module files an engine read as it started, by module id: the
/// SHA-256 of the bytes of each read (a module listed with two settings is
/// read twice), or none for a file that could not be read. What `run
/// --checkpoint` records as the modules a run ran with.
pub(crate) type ModulesRead =
    Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<Option<[u8; 32]>>>>>;

impl Engine {
    /// The settings of these flags.
    fn settings(self) -> Settings {
        let cache = match (&self.artifact_cache, self.no_artifact_cache) {
            (_, true) => Cache::Off,
            (Some(dir), false) => Cache::At(dir.clone(), self.artifact_cache_max_bytes()),
            (None, false) => Cache::Default(self.artifact_cache_max_bytes()),
        };
        Settings {
            pin_workers: self.pin_workers,
            caller_threads: 0,
            modules_read: None,
            options: self.options(),
            cache,
        }
    }

    /// `--artifact-cache-max-mib` in bytes.
    fn artifact_cache_max_bytes(&self) -> u64 {
        self.artifact_cache_max_mib.saturating_mul(1 << 20)
    }

    /// The orchestrator's options with these settings.
    fn options(self) -> Options {
        Options::default()
            .dead_letter_topic(self.dead_letter_topic)
            .breaker(
                BreakerSettings::default()
                    .failures(self.failures)
                    .cool_down(std::time::Duration::from_millis(self.cool_down_ms)),
            )
    }
}

/// An address to listen on, `HOST:PORT`: refused by the parser (exit 2)
/// before the configuration is loaded and the modules compiled, if it is not
/// one (a host name is looked up).
fn listen_address(text: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs().map(|mut addresses| addresses.next()) {
        Ok(Some(_)) => Ok(text.to_owned()),
        Ok(None) => Err("names no address".to_owned()),
        // Shaped HOST:PORT (a name, or a bracketed IPv6 address), but no host
        // of that name: the lookup's error.
        Err(e)
            if text.rsplit_once(':').is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok()
                    && !host.is_empty()
                    && (!host.contains(':') || host.starts_with('['))
            }) =>
        {
            Err(e.to_string())
        }
        Err(e) => Err(format!("{e}: give HOST:PORT, such as 127.0.0.1:8080")),
    }
}

/// A text that may not be empty (a topic).
fn not_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// A number from `low` to `high`, both included (`range` says so in the
/// error): refused by the parser, exit 2, as a malformed one is.
fn within<T>(
    low: T,
    high: T,
    range: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |text| match text.parse::<T>() {
        // (A NaN is in no range.)
        Ok(n) if low <= n && n <= high => Ok(n),
        Ok(_) => Err(format!("must be {range}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A count that must be at least 1.
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    match text.parse::<T>() {
        Ok(n) if n < T::from(1) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// After a first SIGTERM or Ctrl-C (SIGINT), which the command honours in its
/// own time (finishing what it started), a second one ends the process at
/// once, with status 128 + the signal's number (143, 130). For a command
/// that notes the first signal through signal-hook from the start (`run`).
pub(crate) fn exit_on_a_second_signal() -> anyhow::Result<()> {
    exit_on_signals(false)
}

/// From now on, SIGTERM or Ctrl-C ends the process at once (status 143 or
/// 130): for a command that has just begun honouring a first one (`serve`,
/// whose first is tokio's to see).
pub(crate) fn exit_on_the_next_signal() -> anyhow::Result<()> {
    exit_on_signals(true)
}

fn exit_on_signals(now: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(now));
    for signal in [SIGTERM, SIGINT] {
        // In this order: a first signal finds the flag unset, then sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, armed.clone())
            .and_then(|_| signal_hook::flag::register(signal, armed.clone()))
            .context("cannot install the signal handlers")?;
    }
    Ok(())
}

/// `mutex` locked, whether or not a thread panicked holding it (what each
/// guards is written whole).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A line number (from 1) given on the command line.
fn line_number(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("lines are numbered from 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a line number: {e}")),
    }
}

fn main() -> ExitCode {
    // A file-size limit (`ulimit -f`) then fails the write that passes it
    // (EFBIG), which `run` handles as any failed write (whole lines kept, a
    // line to resume from), instead of killing the process mid-line.
    #[cfg(unix)]
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let cli = Cli::parse();
    let level = match cli.command {
        // The file watcher's own notes are not the operator's (its one
        // warning is for a watch it lost track of as a watched directory
        // went, a ConfigMap's previous version for one); what it reports
        // goes through `watch.rs`, which logs it.
        Command::Serve { .. } => "info,notify=error",
        // A module author trying a module sees every line it logs.
        Command::TestModule { .. } => "warn,rustmq_etl::guest=debug",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Validate { config, modules } => validate::run(&config, modules.as_deref()),
        Command::Explain { config, input, now } => explain::run(&config, &input, now),
        Command::Run {
            config,
            input,
            output,
            dead_letter,
            modules,
            trace,
            start_line,
            checkpoint,
            resume_with_changes,
            sync,
            concurrent,
            engine,
        } => run::run(run::Args {
            config,
            input,
            output,
            dead_letter,
            modules,
            trace,
            start_line,
            checkpoint,
            resume_with_changes,
            sync,
            in_order: !concurrent,
            settings: engine.settings(),
        }),
        Command::Serve {
            config,
            listen,
            admin_listen,
            modules,
            max_request_bytes,
            max_body_bytes_in_flight,
            max_batch,
            max_connections,
            head_timeout_ms,
            body_timeout_ms,
            write_timeout_ms,
            shutdown_grace_seconds,
            shutdown_delay_seconds,
            no_watch,
            access_log,
            no_reload_endpoint,
            engine,
        } => serve::serve(serve::Args {
            config,
            listen,
            admin_listen,
            modules,
            max_request_bytes,
            max_body_bytes_in_flight,
            max_batch,
            max_connections,
            head_timeout: Duration::from_millis(head_timeout_ms),
            body_timeout: Duration::from_millis(body_timeout_ms),
            write_timeout: Duration::from_millis(write_timeout_ms),
            shutdown_grace: Duration::from_secs(shutdown_grace_seconds),
            shutdown_delay: Duration::from_secs(shutdown_delay_seconds),
            watch: !no_watch,
            access_log,
            reload_endpoint: !no_reload_endpoint,
            settings: engine.settings(),
        }),
        Command::TestModule {
            module,
            input,
            module_config,
            timeout_ms,
            memory_limit_bytes,
            json,
        } => test_module::run(test_module::Args {
            module,
            input,
            module_config,
            timeout_ms,
            memory_limit_bytes,
            json,
        }),
        Command::NewModule { name, dir, sdk } => {
            new_module::run(new_module::Args { name, dir, sdk })
        }
        Command::Bench {
            config,
            input,
            modules,
            seconds,
            batch,
            callers,
            engine,
        } => bench::run(bench::Args {
            config,
            input,
            modules,
            seconds,
            batch,
            callers,
            settings: engine.settings(),
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            say!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether warnings go through the logger (`serve`: timestamped, with a
/// level, as the rest of its log) rather than plainly to standard error.
static WARNINGS_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A warning (`text` without its `warning: ` prefix): logged while serving,
/// else said.
fn warn(text: &str) {
    if WARNINGS_LOGGED.load(std::sync::atomic::Ordering::Relaxed) {
        log::warn!("{text}");
    } else {
        say!("warning: {text}");
    }
}

/// Loads and compiles a configuration, printing warnings (and returning
/// them), or prints every error.
fn load_plan(
    path: &std::path::Path,
) -> Option<(
    rustmq_etl_config::Config,
    rustmq_etl_orchestrator::Plan,
    Vec<String>,
)> {
    let loaded = match rustmq_etl_config::Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            for d in e.diagnostics() {
                say!("{d}");
            }
            let errors = e.errors().count();
            say!(
                "{}: invalid configuration: {errors} error{}",
                path.display(),
                plural(errors)
            );
            return None;
        }
    };
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    for w in &warnings {
        match w.strip_prefix("warning: ") {
            Some(text) => warn(text),
            None => say!("{w}"),
        }
    }
    match rustmq_etl_orchestrator::Plan::build(&loaded.config) {
        Ok(plan) => Some((loaded.config, plan, warnings)),
        Err(e) => {
            say!("error: {}: {e}", e.file().unwrap_or(path).display());
            say!("{}: invalid configuration: 1 error", path.display());
            None
        }
    }
}

/// Starts the engine and loads `config`'s modules from `modules`, or prints
/// every module that could not be compiled or started. A module whose file
/// is not there does not stop the start: it is named in a warning, and its
/// calls fail `unavailable` (execution.md), handled by its pipeline's error
/// strategy.
fn start(
    config: &rustmq_etl_config::Config,
    modules: &std::path::Path,
    settings: &Settings,
) -> anyhow::Result<Option<Orchestrator<Pool>>> {
    load_modules(config, modules, false, settings)
}

/// What a caught panic said ("a panic" if it said nothing in text).
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Where modules are looked for, said when one was not read.
const MODULES_HINT: &str = "--modules sets the directory; a module is <dir>/<module_id>.wasm";

/// [`start`]; `validating`: only to check that every module loads (one that
/// is not there is then an error too).
fn load_modules(
    config: &rustmq_etl_config::Config,
    modules: &std::path::Path,
    validating: bool,
    settings: &Settings,
) -> anyhow::Result<Option<Orchestrator<Pool>>> {
    // A directory that is not there is a mistake in the command, not a
    // module that is missing: nothing would run.
    if !modules.is_dir() {
        say!(
            "error: {}: {} ({MODULES_HINT})",
            modules.display(),
            if modules.exists() {
                "not a directory"
            } else if modules == crate::run::default_modules() {
                // Given or not, the default's second place is not there either.
                "no such directory of modules, nor is fixtures/modules one"
            } else {
                "no such directory of modules"
            }
        );
        if !validating {
            say!("cannot start: no directory of modules");
        }
        return Ok(None);
    }
    let engine = Arc::new(
        settings
            .cache
            .pool(settings.pin_workers, settings.caller_threads)?,
    );
    let directory = DirectorySource::new(modules);
    let read = settings.modules_read.clone();
    let source = move |module_id: &str| {
        let bytes = directory.read(module_id);
        if let Some(read) = &read {
            use sha2::Digest as _;
            let digest = bytes.as_ref().ok().map(|b| sha2::Sha256::digest(b).into());
            read.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(module_id.to_owned())
                .or_default()
                .push(digest);
        }
        bytes
    };
    let options = settings.options.clone();
    let errors = match Orchestrator::new(engine, config, source, options) {
        Ok(etl) => {
            let unavailable = etl.unavailable();
            if unavailable.is_empty() {
                return Ok(Some(etl));
            }
            if !validating {
                for error in &unavailable {
                    warn(&error.to_string());
                }
                let files = by_file(&unavailable);
                warn(&format!(
                    "{} module{} could not be loaded from {}: \
                     each call of {} fails `unavailable`, handled by its pipeline's error strategy",
                    files.len(),
                    plural(files.len()),
                    modules_named(modules, &unavailable),
                    files
                        .iter()
                        .map(|id| format!("{id:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return Ok(Some(etl));
            }
            unavailable
        }
        Err(e) => e.errors,
    };
    for error in &errors {
        say!("error: {error}");
    }
    let files = by_file(&errors).len();
    say!(
        "{}{files} module{} could not be loaded from {}",
        if validating { "" } else { "cannot start: " },
        plural(files),
        modules_named(modules, &errors),
    );
    Ok(None)
}

/// The modules of `errors`, each once: one module listed with two settings
/// is one file (its errors are each said apart).
fn by_file(errors: &[LoadError]) -> Vec<&str> {
    let mut files: Vec<&str> = errors.iter().map(|e| e.module()).collect();
    files.sort_unstable();
    files.dedup();
    files
}

/// The modules directory, with where the files are looked for when one of
/// `errors` is a file not read (only then does that help).
fn modules_named(modules: &std::path::Path, errors: &[LoadError]) -> String {
    if errors.iter().any(|e| e.step() == LoadStep::Read) {
        format!("{} ({MODULES_HINT})", modules.display())
    } else {
        modules.display().to_string()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
