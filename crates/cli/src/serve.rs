//! `rustmq-etl serve`: the engine as an HTTP service, for brokers and clients
//! that are not Rust. docs/serve.md is the API's reference; its examples are
//! run by `tests/serve.rs`.
//!
//! The configuration and modules are watched: a change reloads them (a valid
//! configuration swaps in atomically; an invalid one is reported and the old
//! one keeps serving), as does `POST /v1/reload`. SIGTERM or Ctrl-C stops
//! accepting connections, answers every request in flight, and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rustmq_etl_config::Config;
use rustmq_etl_core::{BatchError, Message};
use rustmq_etl_orchestrator::{
    Disposition, Orchestrator, ProcessOptions, Processed, SkipReason, TraceEvent,
};
use rustmq_etl_pool::Pool;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::report::ProcessedJson;
use crate::{load_plan, start};

pub(crate) struct Args {
    pub config: PathBuf,
    pub listen: String,
    /// Where /health, /ready and /metrics are also served, apart.
    pub admin_listen: Option<String>,
    pub modules: Option<PathBuf>,
    pub max_request_bytes: usize,
    /// The most bytes of request bodies held at once.
    pub max_body_bytes_in_flight: usize,
    pub max_batch: usize,
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long after a signal it goes on taking connections, `/ready`
    /// answering 503, before the shutdown proper.
    pub shutdown_delay: Duration,
    pub watch: bool,
    /// Log a line for each answer (`--access-log`).
    pub access_log: bool,
    /// Whether `POST /v1/reload` is served (not `--no-reload-endpoint`).
    pub reload_endpoint: bool,
    /// The engine's settings from the command line.
    pub settings: crate::Settings,
}

/// The service's state, shared by every request.
struct Service {
    etl: Orchestrator<Pool>,
    config_path: PathBuf,
    modules: PathBuf,
    metrics: PrometheusHandle,
    /// The process's CPU time, memory, threads and files (`process_*`).
    process: metrics_process::Collector,
    max_request_bytes: usize,
    /// Room for request bodies, in KiB: each request read and run holds its
    /// body's (`--max-body-bytes-in-flight`).
    body_room: Arc<tokio::sync::Semaphore>,
    /// What `body_room` holds, in bytes (for the busy answer).
    max_body_bytes_in_flight: usize,
    max_batch: usize,
    body_timeout: Duration,
    /// `Keep-Alive: timeout=…` for every answer: a second less than the
    /// head timeout that closes an idle kept-alive connection, so that a
    /// client reading the hint does not send on a connection being closed
    /// (none when the head timeout is under two seconds).
    keep_alive: Option<axum::http::HeaderValue>,
    shutting_down: AtomicBool,
    /// When the shutdown began: its grace counts from then.
    shutdown_began: std::sync::OnceLock<std::time::Instant>,
    last_reload: Mutex<Option<ReloadStatus>>,
    /// The configuration's warnings as last logged: a reload logs them again
    /// only if they changed.
    warnings: Mutex<Vec<String>>,
    /// Held by a reload from its reading of the files to its swap.
    reloading: Mutex<()>,
    /// Whether `POST /v1/reload` is served (`--no-reload-endpoint`).
    reload_endpoint: bool,
    /// Turns at reading a large body or writing a large answer off the
    /// runtime: one per core, as the runtime's threads did it before (more
    /// at once held more bodies' messages at once, and finished none
    /// sooner). A turn is held by the work, which runs on if its request
    /// is dropped.
    blocking_turns: Arc<tokio::sync::Semaphore>,
}

/// What the last reload did (`GET /v1/config`, `POST /v1/reload`).
#[derive(Debug, Clone, Serialize)]
struct ReloadStatus {
    /// `applied`, `unchanged` (nothing changed; the version stays) or
    /// `rejected`.
    result: &'static str,
    /// `file_change` or `request`.
    trigger: &'static str,
    at_unix_ms: u64,
    /// The configuration in service afterwards.
    config_version: u64,
    /// Module occurrences compiled anew (applied reloads).
    #[serde(skip_serializing_if = "Option::is_none")]
    compiled: Option<usize>,
    /// Why it was rejected: every problem, each naming where.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    /// Modules in service that could not be loaded: their calls fail
    /// `unavailable` (applied and unchanged reloads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unavailable: Vec<String>,
}

impl Service {
    /// Reads the configuration and modules again and puts them in service if
    /// they are valid. Blocks while modules compile.
    fn reload(&self, trigger: &'static str) -> ReloadStatus {
        // One reload at a time, from reading the files to the swap: two at
        // once (the watcher's and a request's) could otherwise put the
        // older reading in service after the newer.
        let _one_at_a_time = crate::lock(&self.reloading);
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let result = match Config::load(&self.config_path) {
            Ok(loaded) => {
                let warnings: Vec<String> =
                    loaded.warnings.iter().map(ToString::to_string).collect();
                let mut logged = crate::lock(&self.warnings);
                if *logged != warnings {
                    for warning in &warnings {
                        // (The level says it: as the start's warnings.)
                        let text = warning.strip_prefix("warning: ").unwrap_or(warning);
                        log::warn!("{text}");
                    }
                    *logged = warnings;
                }
                drop(logged);
                self.etl
                    .reload(&loaded.config)
                    .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
            }
            Err(e) => {
                // A file that does not load never reaches the orchestrator:
                // counted with the rejections it counts itself.
                self.etl.reload_rejected();
                Err(e.errors().map(ToString::to_string).collect::<Vec<_>>())
            }
        };
        let status = match result {
            Ok(report) => {
                for missing in &report.unavailable {
                    log::warn!("reload ({trigger}): {missing}; its calls fail `unavailable`");
                }
                if report.changed {
                    log::info!(
                        "reload ({trigger}): configuration version {} in service ({} module{} compiled)",
                        report.version,
                        report.compiled,
                        crate::plural(report.compiled)
                    );
                } else {
                    log::info!(
                        "reload ({trigger}): nothing changed; configuration version {} stays",
                        report.version
                    );
                }
                ReloadStatus {
                    result: if report.changed {
                        "applied"
                    } else {
                        "unchanged"
                    },
                    trigger,
                    at_unix_ms,
                    config_version: report.version,
                    compiled: Some(report.compiled),
                    errors: Vec::new(),
                    unavailable: report.unavailable.iter().map(ToString::to_string).collect(),
                }
            }
            Err(errors) => {
                for error in &errors {
                    log::error!("reload ({trigger}): {error}");
                }
                log::error!(
                    "reload ({trigger}) rejected: configuration version {} keeps serving",
                    self.etl.config_version()
                );
                ReloadStatus {
                    result: "rejected",
                    trigger,
                    at_unix_ms,
                    config_version: self.etl.config_version(),
                    compiled: None,
                    errors,
                    unavailable: Vec::new(),
                }
            }
        };
        *crate::lock(&self.last_reload) = Some(status.clone());
        status
    }
}

/// The buckets of the duration histograms (`rustmq_etl_*_duration_seconds`),
/// in seconds: 1 µs to 10 s, 1-2.5-5 a decade (a module call takes
/// microseconds, a pipeline up to its global timeout). Without them the
/// exporter renders summaries, whose quantiles cannot be aggregated and
/// fall to 0 a minute after traffic stops.
const DURATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub(crate) fn serve(mut args: Args) -> anyhow::Result<ExitCode> {
    // Modules may leave a message as large as the largest the service reads
    // (and at least as large as the engine's default allows).
    let options = &mut args.settings.options;
    options.max_message_bytes = options.max_message_bytes.max(args.max_request_bytes);
    ACCESS_LOG.store(args.access_log, Ordering::Relaxed);
    if args.max_body_bytes_in_flight < args.max_request_bytes {
        say!(
            "error: --max-body-bytes-in-flight {} is less than --max-request-bytes {}: a request \
             of the largest size would never be read",
            args.max_body_bytes_in_flight,
            args.max_request_bytes
        );
        return Ok(ExitCode::from(2));
    }
    // The start's warnings in the log, as the reloads' are.
    crate::WARNINGS_LOGGED.store(true, Ordering::Relaxed);
    let modules = args
        .modules
        .clone()
        .unwrap_or_else(crate::run::default_modules);
    // (Before reading: what changes while the service starts is reloaded.)
    let read = args
        .watch
        .then(|| crate::watch::Stamp::take(&args.config, &modules));
    let Some((config, _, warnings)) = load_plan(&args.config) else {
        return Ok(ExitCode::FAILURE);
    };
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            DURATION_BUCKETS,
        )
        .context("cannot set the Prometheus buckets")?
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let Some(etl) = start(&config, &modules, &args.settings)? else {
        return Ok(ExitCode::FAILURE);
    };
    let service = Arc::new(Service {
        etl,
        config_path: args.config.clone(),
        modules,
        metrics,
        process: {
            let process = metrics_process::Collector::default();
            process.describe();
            process
        },
        max_request_bytes: args.max_request_bytes,
        body_room: Arc::new(tokio::sync::Semaphore::new(
            kib(args.max_body_bytes_in_flight) as usize,
        )),
        max_body_bytes_in_flight: args.max_body_bytes_in_flight,
        max_batch: args.max_batch,
        body_timeout: args.body_timeout,
        keep_alive: (args.head_timeout.as_secs() >= 2)
            .then(|| format!("timeout={}", args.head_timeout.as_secs() - 1))
            .and_then(|hint| axum::http::HeaderValue::from_str(&hint).ok()),
        shutting_down: AtomicBool::new(false),
        shutdown_began: std::sync::OnceLock::new(),
        last_reload: Mutex::new(None),
        warnings: Mutex::new(warnings),
        reloading: Mutex::new(()),
        reload_endpoint: args.reload_endpoint,
        blocking_turns: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )),
    });
    room_for_connections(
        args.max_connections
            .saturating_add(args.admin_listen.as_ref().map_or(0, |_| ADMIN_CONNECTIONS)),
    );
    let beat = metrics_beat(service.clone())?;
    metrics::describe_counter!(
        "rustmq_etl_http_requests_total",
        "Answers of the service's routes, by route and status."
    );
    metrics::describe_histogram!(
        "rustmq_etl_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's head to its answer built (the body's reading, the waits for room among the bodies in hand and the messages in flight, and the run included), by route."
    );
    metrics::describe_counter!(
        "rustmq_etl_http_unparsed_requests_total",
        "Requests the HTTP layer refused before any route: malformed (400), too_large (431 or 414), http2."
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address: SocketAddr = listener.local_addr()?;
        let _watcher = if let Some(read) = &read {
            let reloader = service.clone();
            Some(
                crate::watch::watch(&service.config_path, &service.modules, read, move || {
                    reloader.reload("file_change");
                })
                .context(
                    "cannot watch the configuration and modules (start with --no-watch to serve \
                 without watching them)",
                )?,
            )
        } else {
            None
        };
        let admin = match &args.admin_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} (--admin-listen)"))?,
            ),
            None => None,
        };
        let shutdown = shutdown_signal(service.clone(), args.shutdown_delay)?;
        log::info!(
            "serving configuration version {} ({} pipeline{}, modules from {}) on http://{address}",
            service.etl.config_version(),
            service.etl.config().pipelines().len(),
            crate::plural(service.etl.config().pipelines().len()),
            service.modules.display()
        );
        // The admin endpoints answer until the main listener's connections
        // are done: through a shutdown's grace, `/ready` says 503 there.
        let (admin_done, admin_stop) = tokio::sync::oneshot::channel::<()>();
        let admin = match admin {
            Some(listener) => {
                log::info!(
                    "admin endpoints (/health, /ready, /metrics) at http://{}",
                    listener.local_addr()?
                );
                Some(tokio::spawn(serve_connections(
                    listener,
                    admin_router(service.clone()),
                    Limits {
                        max_connections: ADMIN_CONNECTIONS,
                        head_timeout: args.head_timeout,
                        write_timeout: args.write_timeout,
                        grace: Duration::ZERO,
                    },
                    async move {
                        let _ = admin_stop.await;
                    },
                )))
            }
            None => None,
        };
        let open = serve_connections(
            listener,
            router(service.clone()),
            Limits {
                max_connections: args.max_connections,
                head_timeout: args.head_timeout,
                write_timeout: args.write_timeout,
                grace: args.shutdown_grace,
            },
            shutdown,
        )
        .await;
        let _ = admin_done.send(());
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if open == 0 {
            log::info!("stopped: every request in flight was answered");
        } else {
            log::warn!(
                "stopped after {} s with {open} connection{} still open: \
                 any request on {} was not answered",
                args.shutdown_grace.as_secs(),
                crate::plural(open),
                if open == 1 { "it" } else { "them" }
            );
        }
        anyhow::Ok(())
    })?;
    // The engine's threads finish the calls they run (one whose caller gave
    // up included): within what is left of the grace, or the process ends
    // without them.
    let left = args.shutdown_grace.saturating_sub(
        service
            .shutdown_began
            .get()
            .map_or(Duration::ZERO, |began| began.elapsed()),
    );
    // Messages in the engine now: their module calls run on unless waited for.
    let running = service.etl.in_flight();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.shutdown_timeout(left);
        // Its handle on the service let go of first: dropping the last one
        // is what waits for the engine's calls.
        beat.stop();
        drop(service);
        let _ = done.send(());
    });
    if finished.recv_timeout(left).is_err() {
        if running > 0 {
            log::warn!(
                "{running} message{} still running in the engine when the shutdown's {} s \
                 were up: exiting without waiting for {}",
                crate::plural(running),
                args.shutdown_grace.as_secs(),
                if running == 1 { "it" } else { "them" }
            );
        }
        std::process::exit(0);
    }
    Ok(ExitCode::SUCCESS)
}

/// What no client may exceed (`serve`'s flags).
struct Limits {
    /// Connections open at once (more wait in the listen queue).
    max_connections: usize,
    /// From connecting, or from the answer before, to a whole request head:
    /// a client that sends nothing, a byte at a time, or keeps a connection
    /// idle, holds none.
    head_timeout: Duration,
    /// For each write of an answer: a client that stops reading holds none.
    write_timeout: Duration,
    /// How long a shutdown waits for the requests in flight.
    grace: Duration,
}

/// Serves HTTP/1.1 connections on `listener` with `router` within `limits`
/// until `shutdown` resolves; then stops accepting and lets the requests in
/// flight finish for up to `limits.grace`. Returns the connections still
/// open then (0: every request in flight was answered).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> usize {
    let Limits {
        max_connections,
        head_timeout,
        write_timeout,
        grace,
    } = limits;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let room = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    // Accepting fails again and again while the process is out of file
    // descriptors: said once, then at most every ten seconds with a count.
    let mut accept_failures: (Option<std::time::Instant>, u64) = (None, 0);
    loop {
        let permit = tokio::select! {
            permit = room.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    let (said, since) = &mut accept_failures;
                    *since += 1;
                    if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        let more = if *since > 1 {
                            format!(" ({} failures since the last warning, this one included)", *since)
                        } else {
                            String::new()
                        };
                        log::warn!("cannot accept a connection: {e}{more}");
                        (*said, *since) = (Some(std::time::Instant::now()), 0);
                    }
                    // Out of file descriptors, say: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(
                TokioIo::new({
                    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
                    stream.set_write_timeout(Some(write_timeout));
                    Box::pin(stream)
                }),
                hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        if ACCESS_LOG.load(Ordering::Relaxed) {
                            request.extensions_mut().insert(Peer(peer));
                        }
                        request
                    },
                )),
            );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that goes away, or sends no request in time, ends its
            // connection: nothing to report. A request the HTTP layer could
            // not read is answered there, before any route: counted here.
            if let Err(e) = connection.await {
                if let Some(reason) = unparsed(&e) {
                    metrics::counter!(
                        "rustmq_etl_http_unparsed_requests_total",
                        "reason" => reason
                    )
                    .increment(1);
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, connections.shutdown()).await {
        Ok(()) => 0,
        // Each connection still open holds its permit.
        Err(_) => max_connections - room.available_permits(),
    }
}

/// Files the process may have open besides its connections (the listener,
/// the runtime, the watch, module and artifact files while they load): 15 at
/// rest on the shipped fixtures, and room to spare.
const OTHER_FILES: u64 = 64;

/// Raises the process's limit of open files (`ulimit -n`) as far as its hard
/// limit allows towards `max_connections` and the files besides; says so if
/// that is not enough (accepting then fails past the limit, and connections
/// wait in the listen queue).
fn room_for_connections(max_connections: usize) {
    let wanted = max_connections as u64 + OTHER_FILES;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => log::warn!(
            "the process may open at most {limit} files (its hard limit, `ulimit -Hn`): with \
             --max-connections {max_connections}, and {OTHER_FILES} kept for its own files, \
             about {} connections can be open at once; raise the limit or lower \
             --max-connections",
            limit.saturating_sub(OTHER_FILES)
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot read or raise the limit of open files: {e}"),
    }
}

/// Why the HTTP layer refused a request before the service saw it, if it
/// did: `too_large` (it answered 431, a head past its buffer or of more than
/// 100 headers, or 414, a URI too long), `http2` (an HTTP/2 preface: closed
/// unanswered), `malformed` (it answered 400).
fn unparsed(error: &hyper::Error) -> Option<&'static str> {
    if error.is_parse_too_large() {
        Some("too_large")
    } else if error.is_parse_version_h2() {
        Some("http2")
    } else if error.is_parse() {
        Some("malformed")
    } else {
        None
    }
}

fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/process", post(process))
        .route("/v1/batch", post(batch))
        .route("/v1/config", get(config))
        .route("/v1/reload", post(reload))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), read_body))
        .layer(middleware::from_fn(count_requests))
        .layer(middleware::map_response_with_state(
            service.clone(),
            keep_alive_hint,
        ))
        .layer(DefaultBodyLimit::max(service.max_request_bytes))
        .with_state(service)
}

/// Connections the admin listener serves at once (probes and a scraper).
const ADMIN_CONNECTIONS: usize = 16;

/// The admin listener's routes (`--admin-listen`): the probes and the
/// metrics, nothing that takes messages or changes the service.
fn admin_router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .fallback(admin_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(count_requests))
        .layer(middleware::map_response_with_state(
            service.clone(),
            keep_alive_hint,
        ))
        .layer(DefaultBodyLimit::max(0))
        .with_state(service)
}

async fn admin_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "the admin listener serves GET /health, GET /ready and GET /metrics only",
    )
}

/// Listens for SIGTERM and Ctrl-C from now on (before the server says it
/// serves: a signal then is honoured, not lost); the future resolves on the
/// first, and from then on `/ready` answers 503.
fn shutdown_signal(
    service: Arc<Service>,
    delay: Duration,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    Ok(async move {
        let which = tokio::select! {
            _ = interrupt.recv() => "Ctrl-C",
            _ = terminate.recv() => "SIGTERM",
        };
        service.shutting_down.store(true, Ordering::SeqCst);
        // A second signal ends the process at once. (Armed only now: armed
        // from the start, a signal before tokio listened would have been
        // taken for the first and not honoured.)
        if let Err(e) = crate::exit_on_the_next_signal() {
            log::warn!("{e:#}: a second signal will not end the process at once");
        }
        if !delay.is_zero() {
            // For the load balancer to see `/ready` answer 503 and stop
            // sending here, while what it still sends is served.
            log::info!(
                "{which}: shutting down in {} s: /ready answers 503, requests are served meanwhile",
                delay.as_secs()
            );
            tokio::time::sleep(delay).await;
        }
        let _ = service.shutdown_began.set(std::time::Instant::now());
        log::info!("{which}: shutting down; no new connections, answering the requests in flight");
    })
}

/// An error answer: a status and `{"error": "..."}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The query string of the message endpoints: a misspelt parameter is an
/// error, not silently no trace.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Each result with its trace.
    #[serde(default)]
    trace: bool,
    /// The batch's messages one after another, each to its end
    /// (`ProcessOptions::in_order`): `/v1/batch` only.
    in_order: Option<bool>,
}

/// The options of a request to `/v1/batch` (`batch`) or `/v1/process`.
fn params(
    query: Result<Query<Params>, QueryRejection>,
    batch: bool,
) -> Result<ProcessOptions, ApiError> {
    let allowed = if batch {
        "trace=true|false and in_order=true|false"
    } else {
        "trace=true|false (in_order is for POST /v1/batch)"
    };
    let q = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad query string ({}): the parameters are {allowed}",
            e.body_text()
        ))
    })?;
    if !batch && q.in_order.is_some() {
        return Err(ApiError::bad_request(format!(
            "bad query string (in_order): the parameters are {allowed}"
        )));
    }
    Ok(ProcessOptions::default()
        .trace(q.trace)
        .in_order(q.in_order.unwrap_or(false)))
}

/// Refuses query parameters on a reload, and reads a request's
/// whole body before its handler runs: one announced
/// larger than the server accepts is refused at once (413, without waiting
/// for it), and one that does not arrive within `serve --body-timeout-ms`
/// is 408.
async fn read_body(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    // A reload takes no parameters: one given is a mistake (a `dry_run`,
    // say), not ignored. (Reading routes ignore them, as probes and
    // scrapers may add some.)
    let path = request.uri().path();
    if path == "/v1/reload" && request.method() == Method::POST {
        if let Some(query) = request.uri().query().filter(|q| !q.is_empty()) {
            return ApiError::bad_request(format!(
                "{} {path} takes no query parameters (got ?{query})",
                request.method()
            ))
            .into_response();
        }
    }
    // A compressed body would read as bytes that are not UTF-8.
    if let Some(encoding) = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .filter(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the request body is encoded ({}); send it uncompressed",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        )
        .into_response();
    }
    // (The length as the HTTP layer read it: `Content-Length: 5, 5` too.)
    let announced = axum::body::HttpBody::size_hint(request.body()).exact();
    if announced.is_some_and(|n| n > service.max_request_bytes as u64) {
        return too_large(&service).into_response();
    }
    let (parts, body) = request.into_parts();
    // The body, read within its time, taking room among the bodies in hand
    // as its bytes arrive (a client that announces much and sends little
    // holds little).
    let mut room: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut waiting_for_room = false;
    let read = read_in_room(body, &service, &mut room, &mut waiting_for_room);
    let read = tokio::time::timeout(service.body_timeout, read).await;
    if !matches!(read, Ok(Ok(_))) {
        // Nothing of a refused body is kept: its room goes back at once.
        room = None;
    }
    // Shared with the handler, which hands it to work it does off the
    // runtime: the room goes back when both are done (the work runs on if
    // the client leaves and this future is dropped).
    let room = room.map(Arc::new);
    let response = match read {
        Ok(Ok(bytes)) => {
            let mut parts = parts;
            parts.extensions.insert(BodyRoom {
                _held: room.clone(),
            });
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(_) if waiting_for_room => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: the request bodies in hand fill --max-body-bytes-in-flight ({} bytes) \
                 and none made room for the rest of this one within {} ms \
                 (--body-timeout-ms): try again later",
                service.max_body_bytes_in_flight,
                service.body_timeout.as_millis()
            ),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms (serve --body-timeout-ms)",
                service.body_timeout.as_millis()
            ),
        )
        .into_response(),
        Ok(Err(BodyError::TooLarge)) => too_large(&service).into_response(),
        Ok(Err(BodyError::Read(e))) => {
            // The client broke the body's framing, or went away: then no
            // one reads the answer, and it has no line nor count.
            let gone = client_went_away(&e);
            let mut response =
                ApiError::bad_request(format!("the request body could not be read: {e}"))
                    .into_response();
            if gone {
                response.extensions_mut().insert(ClientGone);
            }
            response
        }
    };
    // The room is held until the HTTP layer takes the answer to write it
    // (its one frame: written from its own buffer afterwards, however slowly
    // the client reads), or the connection is gone.
    match room {
        Some(room) => response.map(|body| axum::body::Body::new(Holding { body, _held: room })),
        None => response,
    }
}

/// A request's room among the bodies in hand (none for an empty body), for
/// the work done with its body off the runtime to hold as long as it runs.
#[derive(Clone)]
struct BodyRoom {
    _held: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

/// Marks the answer to a client that closed its connection before its body
/// was in: it is not logged nor counted (nobody reads it).
#[derive(Clone, Copy)]
struct ClientGone;

/// Whether reading a body failed because the connection closed before the
/// body was complete (the HTTP layer's "error reading a body from
/// connection" over an end of file or a reset), not because its framing was
/// wrong (over invalid data).
fn client_went_away(e: &axum::Error) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(http) = error.downcast_ref::<hyper::Error>() {
            if http.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            );
        }
        cause = error.source();
    }
    false
}

/// An answer's body that holds `_held` until the HTTP layer drops it, having
/// taken its frames; its length is told as the body's own (the answer keeps
/// its `Content-Length`).
struct Holding<T> {
    body: axum::body::Body,
    _held: T,
}

impl<T: Unpin> hyper::body::Body for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a body was not read.
enum BodyError {
    /// Past `--max-request-bytes`.
    TooLarge,
    /// The client went away, or the body was not well formed.
    Read(axum::Error),
}

/// Reads `body` whole (at most `--max-request-bytes`), taking room among the
/// bodies in hand for each KiB begun before it is kept, into `room`;
/// `waiting` says whether it is waiting for room now.
async fn read_in_room(
    body: axum::body::Body,
    service: &Service,
    room: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    waiting: &mut bool,
) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    // Grown as the bytes come (a client that announces much and sends
    // little is given little), doubling, but never past what was announced
    // (a `Content-Length` body ends with no spare room).
    let announced = axum::body::HttpBody::size_hint(&body).exact();
    let mut read: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        let total = read.len() + data.len();
        if total > service.max_request_bytes {
            return Err(BodyError::TooLarge);
        }
        let held = room.as_ref().map_or(0, |r| r.num_permits());
        let wanted = kib(total) as usize;
        if wanted > held {
            *waiting = true;
            let more = service
                .body_room
                .clone()
                .acquire_many_owned((wanted - held) as u32)
                .await
                .expect("the body room is never closed");
            *waiting = false;
            match room {
                Some(room) => room.merge(more),
                None => *room = Some(more),
            }
        }
        if total > read.capacity() {
            let doubled = (2 * read.capacity()).max(total);
            let grown = match announced {
                Some(announced) => doubled.min((announced as usize).max(total)),
                None => doubled,
            };
            read.reserve_exact(grown - read.len());
        }
        read.extend_from_slice(&data);
    }
    Ok(Bytes::from(read))
}

/// `bytes` in whole KiB, rounded up (the body room's unit), within a
/// semaphore's range.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// 413: a body past `--max-request-bytes`.
fn too_large(service: &Service) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {} bytes, the most this server accepts (serve --max-request-bytes)",
            service.max_request_bytes
        ),
    )
}

/// Bodies past this are read (checked as UTF-8, parsed), and answers past
/// it written, on a blocking thread, not on the runtime's: the runtime has
/// one thread per core, and a large body read inline held up every other
/// connection on its thread, the probes' included, for seconds.
const INLINE_BYTES: usize = 64 << 10;

/// Whether the answer to `results` is large: its messages' and traces'
/// text (before JSON's escapes) past [`INLINE_BYTES`], whatever the
/// request's size — a module may answer a small message with a large one,
/// or fail it with a long error, which a trace repeats for every message.
fn large_answer(results: &[Processed]) -> bool {
    // About what a trace entry's JSON writes beside its texts (its field
    // names, numbers, what happened).
    const TRACE_ENTRY_BYTES: usize = 128;
    let bytes: usize = results
        .iter()
        .map(|p| {
            let message = match &p.disposition {
                Disposition::Delivered(m) | Disposition::DeadLettered(m) => m.full_size(),
                Disposition::Dropped => 0,
            };
            let trace = p.trace.iter().flat_map(|t| &t.entries).map(|entry| {
                let text = match &entry.event {
                    TraceEvent::Failed { error, .. } => error.len(),
                    TraceEvent::Skipped(SkipReason::NotSelected(why)) => why.len(),
                    TraceEvent::Ran { .. } | TraceEvent::Skipped(_) => 0,
                };
                TRACE_ENTRY_BYTES + entry.pipeline.len() + entry.module.len() + text
            });
            message + trace.sum::<usize>()
        })
        .sum();
    bytes > INLINE_BYTES
}

/// Runs `work` on the request body as text, which must be UTF-8 and not
/// blank: inline for a small body, on a blocking thread for a large one.
async fn with_body_text<T: Send + 'static>(
    service: &Service,
    room: &BodyRoom,
    body: Result<Bytes, BytesRejection>,
    expected: &'static str,
    work: impl FnOnce(&str) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(service)),
        Err(e) => return Err(ApiError::new(e.status(), e.body_text())),
    };
    let large = bytes.len() > INLINE_BYTES;
    let read = move || {
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not UTF-8 (at byte {}); send JSON",
                e.valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "the request body is empty; send {expected} (docs/serve.md)"
            )));
        }
        work(text)
    };
    if large {
        off_the_runtime(service, room, read).await?
    } else {
        read()
    }
}

/// Runs `work` on a blocking thread, in its turn; a panic there is a 500.
/// The work holds its turn and the request's body room while it runs.
async fn off_the_runtime<T: Send + 'static>(
    service: &Service,
    room: &BodyRoom,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    // (The semaphore is never closed.)
    let turn = service.blocking_turns.clone().acquire_owned().await.ok();
    let room = room.clone();
    tokio::task::spawn_blocking(move || {
        let _held = (turn, room);
        work()
    })
    .await
    .map_err(|e| {
        log::error!("reading a request or writing its answer failed: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request could not be read or answered (a rustmq-etl bug; see the log)",
        )
    })
}

/// A JSON answer, the text `write` makes (with the content type axum's
/// `Json` gives): made on a blocking thread when `large`.
async fn json_answer(
    service: &Service,
    room: &BodyRoom,
    large: bool,
    write: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
) -> Result<Response, ApiError> {
    let written = if large {
        off_the_runtime(service, room, write).await?
    } else {
        write()
    };
    let bytes = written.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the answer could not be written as JSON: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// The messages of a batch body: a JSON array of messages, or JSON Lines.
/// More than `max` is refused before any is parsed.
fn batch_messages(text: &str, max: usize) -> Result<Vec<Message>, ApiError> {
    Message::batch_from_json(text, max).map_err(|e| match e {
        BatchError::TooMany { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{e} (serve --max-batch)"),
        ),
        e => ApiError::bad_request(e.to_string()),
    })
}

/// Runs a request's messages: one result each, in order.
async fn run_messages(
    service: &Service,
    messages: Vec<Message>,
    options: ProcessOptions,
) -> Result<Vec<Processed>, ApiError> {
    service
        .etl
        .process_batch(messages, options)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine gave no answer: it stopped, or failed while running the messages \
                 (see the log); some may have run",
            )
        })
}

/// `POST /v1/process[?trace=true]`: one message.
async fn process(
    State(service): State<Arc<Service>>,
    query: Result<Query<Params>, QueryRejection>,
    room: Option<axum::Extension<BodyRoom>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let room = room.map_or(BodyRoom { _held: None }, |axum::Extension(room)| room);
    let options = params(query, false)?;
    let large = body.as_ref().is_ok_and(|b| b.len() > INLINE_BYTES);
    let message = with_body_text(
        &service,
        &room,
        body,
        "a message as a JSON object",
        |text| {
            if text.trim_start().starts_with('[') {
                return Err(ApiError::bad_request(
                    "POST /v1/process takes one message, a JSON object; send an array of messages \
                 to POST /v1/batch",
                ));
            }
            Message::from_json_line(text)
                .map_err(|e| ApiError::bad_request(format!("the message: {e}")))
        },
    )
    .await?;
    let results = run_messages(&service, vec![message], options).await?;
    if results.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the engine answered no result for the message (a rustmq-etl bug)",
        ));
    }
    let large = large || large_answer(&results);
    json_answer(&service, &room, large, move || {
        serde_json::to_vec(&ProcessedJson::new(&results[0], options.trace))
    })
    .await
}

#[derive(Serialize)]
struct BatchJson<'a> {
    results: Vec<ProcessedJson<'a>>,
}

/// `POST /v1/batch[?trace=true][&in_order=true]`: messages in, one result
/// each, in order.
async fn batch(
    State(service): State<Arc<Service>>,
    query: Result<Query<Params>, QueryRejection>,
    room: Option<axum::Extension<BodyRoom>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let room = room.map_or(BodyRoom { _held: None }, |axum::Extension(room)| room);
    let options = params(query, true)?;
    let large = body.as_ref().is_ok_and(|b| b.len() > INLINE_BYTES);
    let max = service.max_batch;
    let messages = with_body_text(
        &service,
        &room,
        body,
        "messages as a JSON array of objects or as JSON Lines",
        move |text| batch_messages(text, max),
    )
    .await?;
    // Many small messages answer large too.
    let large = large || messages.len() > 256;
    let results = run_messages(&service, messages, options).await?;
    let large = large || large_answer(&results);
    json_answer(&service, &room, large, move || {
        serde_json::to_vec(&BatchJson {
            results: results
                .iter()
                .map(|p| ProcessedJson::new(p, options.trace))
                .collect(),
        })
    })
    .await
}

/// `GET /v1/config`: the configuration in service and the last reload.
async fn config(State(service): State<Arc<Service>>) -> Json<serde_json::Value> {
    // The last reload's status first: a reload is recorded after it applies,
    // so the version in service read next is at least the one it names (read
    // the other way round, a reload between the two reads answered
    // `config_version` 1 beside a `last_reload` of version 2).
    let last_reload = crate::lock(&service.last_reload).clone();
    // One version's configuration and occurrences, whatever reloads meanwhile.
    let in_service = service.etl.in_service();
    let pipelines: Vec<_> = in_service
        .config
        .pipelines()
        .iter()
        .map(|source| {
            let p = &source.pipeline;
            json!({
                "pipeline_id": p.pipeline_id,
                "name": p.name,
                "enabled": p.enabled,
                "stages": p.stages.len(),
                "modules": p.stages.iter().map(|s| s.modules.len()).sum::<usize>(),
                "file": source.file.as_ref().map(|f| f.display().to_string()),
            })
        })
        .collect();
    // Each module occurrence: the `settings` label of its metric series, its
    // breaker, and where it is used.
    let occurrences: Vec<_> = in_service
        .occurrences
        .into_iter()
        .map(|o| {
            let mut occurrence = json!({
                "module_id": o.spec.id,
                "settings": o.spec.settings.label(),
                "circuit": o.circuit.as_str(),
                "used_in": o.used_in.iter().map(|(pipeline, priority)| {
                    json!({"pipeline": pipeline, "priority": priority})
                }).collect::<Vec<_>>(),
            });
            if let Some(why) = o.unavailable {
                occurrence["unavailable"] = json!(why);
            }
            occurrence
        })
        .collect();
    Json(json!({
        "config_version": in_service.version,
        "config_path": service.config_path.display().to_string(),
        "modules_dir": service.modules.display().to_string(),
        "pipelines": pipelines,
        "occurrences": occurrences,
        "last_reload": last_reload,
    }))
}

/// `POST /v1/reload`: read the configuration and modules again now (403
/// with `--no-reload-endpoint`).
async fn reload(State(service): State<Arc<Service>>) -> Response {
    if !service.reload_endpoint {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "POST /v1/reload is off: the server was started with --no-reload-endpoint; it \
             reloads when its configuration or modules change (unless --no-watch), or on a \
             restart"
                .to_owned(),
        )
        .into_response();
    }
    let status = match tokio::task::spawn_blocking(move || service.reload("request")).await {
        Ok(status) => status,
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the reload failed: {e}"),
            )
            .into_response()
        }
    };
    let code = if status.result == "rejected" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (code, Json(status)).into_response()
}

/// `GET /health`: the process is up.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 while serving, 503 once shutting down.
async fn ready(State(service): State<Arc<Service>>) -> Response {
    if service.shutting_down.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down" })),
        )
            .into_response()
    } else {
        Json(json!({ "status": "ready", "config_version": service.etl.config_version() }))
            .into_response()
    }
}

/// How often [`metrics_beat`] hands the metrics to the exporter.
const METRICS_BEAT: Duration = Duration::from_secs(1);

/// The thread of [`metrics_beat`], until [`Beat::stop`].
struct Beat {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Beat {
    /// Stops the beat and waits for its thread, which lets go of the
    /// service.
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Every [`METRICS_BEAT`], whether or not anything scrapes `/metrics`,
/// publishes the metrics and lets the exporter fold the samples recorded
/// since into its histograms (its upkeep), on a thread of its own, until
/// stopped. The histograms' samples since the last publish are handed to the
/// exporter one by one, and it keeps each (about 24 bytes) until it renders
/// or runs its upkeep: without the beat, a server nobody scraped held every
/// sample since its start — about 5 MB a second at 20,000 messages a second
/// through design.md's pipelines — and the first scrape after a gap handed
/// the exporter all of them at once.
fn metrics_beat(service: Arc<Service>) -> anyhow::Result<Beat> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("rustmq-etl-metrics".to_owned())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(METRICS_BEAT)
            {
                // A panic in the recorder costs a beat, not the beat.
                let tick = std::panic::AssertUnwindSafe(|| {
                    service.etl.publish_metrics();
                    service.metrics.run_upkeep();
                });
                if let Err(panic) = std::panic::catch_unwind(tick) {
                    let text = crate::panic_text(&*panic);
                    log::error!("publishing the metrics panicked: {text}; trying again in 1 s");
                }
            }
        })
        .context("cannot start the metrics thread")?;
    Ok(Beat { stop, thread })
}

/// `GET /metrics`: Prometheus text.
async fn prometheus(State(service): State<Arc<Service>>) -> Response {
    service.etl.publish_metrics();
    service.process.collect();
    service.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics.render(),
    )
        .into_response()
}

const ROUTES: &str = "POST /v1/process, POST /v1/batch, GET /v1/config, POST /v1/reload, GET /health, GET /ready, GET /metrics";

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}; the routes: {ROUTES}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}; the routes: {ROUTES}",
            uri.path()
        ),
    )
}

/// Adds the service's `Keep-Alive` hint to an answer; once a shutdown has
/// begun, `Connection: close` instead.
async fn keep_alive_hint(State(service): State<Arc<Service>>, mut response: Response) -> Response {
    if service.shutting_down.load(Ordering::SeqCst) {
        // Shutting down (a delay's time, or the grace): the client is told
        // to open its next connection elsewhere, and this one closes after
        // the answer.
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    } else if let Some(hint) = &service.keep_alive {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static("keep-alive"),
            hint.clone(),
        );
    }
    response
}

/// The address a request's connection came from.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// `--access-log`: a line for each answer.
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Counts every answer of the service's routes by route and status
/// (`rustmq_etl_http_requests_total`), and with `--access-log` logs it.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // What the access log line says of the request, taken only if wanted.
    let asked = ACCESS_LOG.load(Ordering::Relaxed).then(|| {
        let peer = request.extensions().get::<Peer>().map(|p| p.0);
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        (peer, request.method().clone(), target, request.version())
    });
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if response.extensions().get::<ClientGone>().is_some() {
        return response;
    }
    let took = started.elapsed();
    metrics::histogram!("rustmq_etl_http_request_duration_seconds", "route" => route.clone())
        .record(took.as_secs_f64());
    if let Some((peer, method, target, version)) = asked {
        // The body's length as the HTTP layer will send it (none known for
        // a streamed one).
        let bytes = hyper::body::Body::size_hint(response.body())
            .exact()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        log::info!(
            target: "rustmq_etl::access",
            "{} \"{method} {} {version:?}\" {} {bytes} {:.3} ms",
            peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            // (A `"` the HTTP layer lets through in a path is escaped.)
            target.escape_debug(),
            response.status().as_u16(),
            took.as_secs_f64() * 1000.0
        );
    }
    metrics::counter!(
        "rustmq_etl_http_requests_total",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}
