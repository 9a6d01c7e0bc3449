//! `ledgerd serve`: from the command line to a listening, recovered, draining server.
//!
//! This module owns the serve command's flags ([`ServeArgs`]), how the configuration is
//! assembled (embedded default < file < `LEDGERD_<SECTION>__<KEY>` environment < flags, then
//! validated, before anything binds: [`load_config`]), the refusal to expose an
//! unauthenticated server beyond loopback, the data directory (created when missing, locked
//! against a second process), the wiring of recovery, committer and actors ([`Engine`]), the
//! server's life (bind, `/ready` 503 until recovery is done, `listening on ADDR` on stdout once
//! ready, periodic snapshots, graceful drain on SIGTERM/SIGINT, then the snapshot thread, the
//! actors and the committer stopped in order), the webhook providers' secrets (read from the
//! environment before anything binds) and the webhook service over the recovered bookkeeping,
//! and [`build_app`], the same wiring without a socket for tests.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actors::{Clock, LedgerHandle, LedgerSettings, system_clock};
use axum::Router;
use config::{Config, LogFormat, process_environment};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{self, AppState};
use crate::log_watermark::{self, WatermarkKeeper};
use crate::snapshot_scheduler::{self, SchedulerSettings, SnapshotScheduler, SnapshotService};
use crate::webhooks::providers::{ProviderError, Providers};
use crate::webhooks::{WebhookSettings, Webhooks};

/// Flags of `ledgerd serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; absent keys take the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `storage.data_dir`); created when missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. `127.0.0.1:8080` (overrides `server.bind`); port 0 picks a
    /// free port.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

/// Why `serve` stopped with an error. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] config::LoadError),
    #[error(
        "refusing to listen on {address}: no auth tokens are configured ([[auth.tokens]]), so only a loopback \
         address is allowed"
    )]
    NonLoopback { address: SocketAddr },
    #[error("cannot create data dir {}: {source}", path.display())]
    CreateDataDir { path: PathBuf, source: std::io::Error },
    #[error("{reason}")]
    Lock { path: PathBuf, reason: String },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot recover data dir {}: {reason}", path.display())]
    Recovery { path: PathBuf, reason: String },
    #[error("cannot start the ledger: {0}")]
    Start(String),
    #[error("{0}")]
    Webhooks(#[from] ProviderError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// How long in-flight requests get to finish after SIGTERM, beyond the request timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How often a long recovery logs its progress.
const RECOVERY_PROGRESS_PERIOD: Duration = Duration::from_secs(5);

/// How often the metrics recorder's upkeep runs.
const METRICS_UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The configuration `serve` runs with: the embedded default, the file (`--config`), the
/// `LEDGERD_<SECTION>__<KEY>` variables of `environment`, then the flags; validated, and
/// checked against binding a non-loopback address without auth.
pub fn load_config(
    args: &ServeArgs,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ServeError> {
    let config = load_config_unchecked_bind(args, environment)?;
    check_bind_allowed(&config)?;
    Ok(config)
}

/// [`load_config`] without the check of the bind address against auth, for the offline
/// commands (which bind nothing).
pub fn load_config_unchecked_bind(
    args: &ServeArgs,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ServeError> {
    let sources = config::Sources {
        file: args.config.clone(),
        environment: environment.into_iter().collect(),
        data_dir: args.data_dir.clone(),
        bind: args.bind,
    };
    Ok(config::load(&sources)?)
}

/// With auth off, only a loopback address may be bound.
pub fn check_bind_allowed(config: &Config) -> Result<(), ServeError> {
    let address = config.server.bind;
    if !config.auth_enabled() && !address.ip().is_loopback() {
        return Err(ServeError::NonLoopback { address });
    }
    Ok(())
}

/// Runs `ledgerd serve` to completion: `Ok` after a graceful shutdown.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let environment = process_environment();
    let config = load_config(args, environment.clone())?;
    let providers = resolve_providers(&config, &environment)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(config, providers));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The webhook providers of `config`, their `secret_env` variables read from `environment`.
pub fn resolve_providers(config: &Config, environment: &[(String, String)]) -> Result<Providers, ServeError> {
    let lookup = |name: &str| environment.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    Ok(Providers::resolve(&config.webhooks, lookup)?)
}

/// Creates the data directory when missing and locks it.
pub fn open_data_dir(path: &Path) -> Result<snapshots::DataDirLock, ServeError> {
    std::fs::create_dir_all(path).map_err(|source| ServeError::CreateDataDir { path: path.to_owned(), source })?;
    snapshots::DataDirLock::acquire(path)
        .map_err(|error| ServeError::Lock { path: path.to_owned(), reason: one_line(&error.to_string()) })
}

/// The durable ledger: the recovered state, the committer and the actors over them.
pub struct Engine {
    pub ledger: LedgerHandle,
    /// The recovered webhook bookkeeping (`Record::External` facts), until taken.
    external: BTreeMap<(String, String), Vec<u8>>,
    commit: snapshots::CommitHandle,
    committer: Option<std::thread::JoinHandle<Result<(), snapshots::WalError>>>,
    /// Periodic snapshots (`None` when `storage.snapshot_interval_seconds` is 0).
    snapshot_scheduler: Option<SnapshotScheduler>,
    /// Snapshots and online backups of this data dir, one at a time.
    snapshot_service: Arc<SnapshotService>,
    /// The log's durable high-water mark, kept up to date.
    watermark: Option<WatermarkKeeper>,
    _lock: snapshots::DataDirLock,
}

impl Engine {
    /// Recovers the data dir held by `lock` and starts the committer and the actors.
    pub async fn start(config: &Config, lock: snapshots::DataDirLock, clock: Clock) -> Result<Engine, ServeError> {
        let data_dir = config.storage.data_dir.clone();
        let recovering = data_dir.clone();
        let recovery_failed =
            |reason: String| ServeError::Recovery { path: data_dir.clone(), reason: one_line(&reason) };
        let mut recovered = tokio::task::spawn_blocking(move || {
            // Progress at info level at most every RECOVERY_PROGRESS_PERIOD, for long replays.
            let started = std::time::Instant::now();
            let mut last_report = started;
            snapshots::recover(&recovering, |progress| {
                tracing::debug!(applied_seq = progress.applied_seq, target_seq = progress.target_seq, "recovering");
                if last_report.elapsed() >= RECOVERY_PROGRESS_PERIOD {
                    last_report = std::time::Instant::now();
                    tracing::info!(
                        applied_seq = progress.applied_seq,
                        target_seq = progress.target_seq,
                        replayed_records = progress.replayed_records,
                        elapsed_seconds = started.elapsed().as_secs(),
                        "recovering"
                    );
                }
            })
        })
        .await
        .map_err(|error| recovery_failed(error.to_string()))?
        .map_err(|error| recovery_failed(error.to_string()))?;
        // A log that came back shorter than it durably was is refused, never served.
        log_watermark::check(&data_dir, recovered.ledger.last_seq)
            .map_err(|error| recovery_failed(error.to_string()))?;
        let snapshot_seq = recovered.snapshot.as_ref().map_or(0, |snapshot| snapshot.seq);
        metrics::gauge!(http::metrics::SNAPSHOT_LAST_SEQ).set(seq_as_gauge(snapshot_seq));
        // The age of the newest snapshot counts from its creation, or from this start (which
        // replayed the log) when there is none yet.
        let snapshot_created_at_ms =
            recovered.snapshot.as_ref().map_or_else(|| clock(), |snapshot| snapshot.created_at_ms);
        snapshot_scheduler::record_snapshot_time(snapshot_created_at_ms);
        tracing::info!(
            last_seq = recovered.ledger.last_seq,
            snapshot_seq,
            replayed_records = recovered.replayed_records,
            accounts = recovered.ledger.accounts.len(),
            "recovered"
        );
        let limits = &config.limits;
        let settings = snapshots::CommitterSettings {
            group_records_max: config.engine.commit_group_records_max,
            group_bytes_max: config.engine.commit_group_bytes_max,
            // Admission control (max_in_flight_transfers) bounds what the actors submit; the
            // queue holds twice the largest burst they can hand over at once.
            queue_records_max: limits
                .max_in_flight_transfers
                .max(limits.batch_max)
                .max(config.engine.commit_group_records_max)
                .saturating_mul(2),
        };
        let next_seq = recovered.ledger.last_seq + 1;
        // The actors own accounts and transfers; the webhook service owns these.
        let external = std::mem::take(&mut recovered.ledger.external);
        // The snapshot thread reads the log through its own clone of the open log.
        let snapshot_wal = recovered.wal.clone();
        let watermark =
            WatermarkKeeper::start(data_dir.clone(), recovered.wal.clone(), log_watermark::WATERMARK_PERIOD)
                .map_err(|error| ServeError::Start(one_line(&error.to_string())))?;
        let (commit, committer) = snapshots::Committer::start(recovered.wal, next_seq, settings);
        let ledger_settings = LedgerSettings {
            shards: config.engine.shards,
            max_in_flight_transfers: limits.max_in_flight_transfers,
            expiry_tick_ms: config.engine.expiry_tick_ms,
            clock: clock.clone(),
        };
        let ledger = match LedgerHandle::start(ledger_settings, recovered.ledger, commit.clone()).await {
            Ok(ledger) => ledger,
            Err(error) => {
                commit.close();
                let _ = tokio::task::spawn_blocking(move || committer.join()).await;
                return Err(ServeError::Start(one_line(&error.to_string())));
            }
        };
        let snapshot_service = Arc::new(SnapshotService::new(
            data_dir.clone(),
            snapshot_wal,
            snapshot_scheduler::retention(config),
            clock,
        ));
        let scheduler_settings =
            SchedulerSettings { interval: Duration::from_secs(config.storage.snapshot_interval_seconds), snapshot_seq };
        let snapshot_scheduler = SnapshotScheduler::start(scheduler_settings, snapshot_service.clone());
        Ok(Engine {
            ledger,
            external,
            commit,
            committer: Some(committer),
            snapshot_scheduler,
            snapshot_service,
            watermark: Some(watermark),
            _lock: lock,
        })
    }

    /// Starts the webhook service over the recovered bookkeeping (once; later calls see none).
    pub fn start_webhooks(
        &mut self,
        config: &Config,
        providers: Providers,
        clock: Clock,
    ) -> Result<Arc<Webhooks>, ServeError> {
        let external = std::mem::take(&mut self.external);
        let settings = WebhookSettings {
            providers,
            currencies: engine::CurrencyTable::new(
                config.currencies.iter().map(|currency| engine::Currency::new(&currency.code, currency.scale)),
            ),
            amount_max: config.limits.amount_max,
            clock,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        };
        Webhooks::start(settings, self.ledger.clone(), &external)
            .map_err(|error| ServeError::Start(one_line(&error.to_string())))
    }

    /// Snapshots and online backups of the served data dir.
    pub fn snapshot_service(&self) -> &Arc<SnapshotService> {
        &self.snapshot_service
    }

    /// Stops the snapshot thread (after the snapshot in progress), the actors (they finish
    /// what is in flight), then the committer (it writes what was decided), records the log's
    /// final high-water mark, then releases the data dir.
    pub async fn stop(mut self) {
        if let Some(scheduler) = self.snapshot_scheduler.take() {
            let _ = tokio::task::spawn_blocking(move || scheduler.stop()).await;
        }
        self.ledger.shutdown().await;
        self.commit.close();
        let Some(committer) = self.committer.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || committer.join()).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "the committer stopped with an error"),
            Ok(Err(_)) | Err(_) => tracing::error!("the committer thread panicked"),
        }
        // Everything is written: the last mark is the log's end.
        if let Some(watermark) = self.watermark.take() {
            let _ = tokio::task::spawn_blocking(move || watermark.stop()).await;
        }
    }
}

/// The HTTP application over a recovered data dir, without a socket (for tests and tools).
pub struct App {
    pub router: Router,
    pub state: Arc<AppState>,
    engine: Engine,
}

/// What [`build_app`] may be given besides the config.
pub struct AppOptions {
    /// Milliseconds since the epoch (tests pass a controllable clock).
    pub clock: Clock,
    /// The metrics recorder's handle, when one is installed.
    pub prometheus: Option<PrometheusHandle>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions { clock: system_clock(), prometheus: None }
    }
}

/// Opens (creating and locking) `config.storage.data_dir`, recovers it, starts the committer
/// and the actors, and returns the ready router.
pub async fn build_app(config: &Config, options: AppOptions) -> Result<App, ServeError> {
    let providers = resolve_providers(config, &process_environment())?;
    let lock = open_data_dir(&config.storage.data_dir)?;
    let mut engine = Engine::start(config, lock, options.clock.clone()).await?;
    let webhooks = match engine.start_webhooks(config, providers, options.clock) {
        Ok(webhooks) => webhooks,
        Err(error) => {
            engine.stop().await;
            return Err(error);
        }
    };
    let state = Arc::new(AppState::new(config, options.prometheus));
    state.set_webhooks(webhooks);
    state.set_snapshot_service(engine.snapshot_service().clone());
    state.set_ready(engine.ledger.clone());
    Ok(App { router: http::router(state.clone()), state, engine })
}

impl App {
    /// The ledger behind the router.
    pub fn ledger(&self) -> &LedgerHandle {
        &self.engine.ledger
    }

    /// Stops the ledger and releases the data dir.
    pub async fn shutdown(self) {
        self.engine.stop().await;
    }
}

/// The server's whole life, on a runtime.
async fn serve(config: Config, providers: Providers) -> Result<(), ServeError> {
    init_logging(config.server.log_format);
    let stop = spawn_signal_listener();
    let data_dir = config.storage.data_dir.clone();
    let lock = open_data_dir(&data_dir)?;
    let bind = config.server.bind;
    let listener = TcpListener::bind(bind).await.map_err(|source| ServeError::Bind { address: bind, source })?;
    let address = listener.local_addr().map_err(|source| ServeError::Bind { address: bind, source })?;

    let prometheus = http::metrics::install_recorder();
    let state = Arc::new(AppState::new(&config, Some(prometheus.clone())));
    let upkeep = tokio::spawn(http::metrics::run_upkeep(prometheus, METRICS_UPKEEP_PERIOD));
    let sweeper = tokio::spawn(sweep_rate_limiter(state.clone()));
    let application = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut server =
        tokio::spawn(axum::serve(listener, application).with_graceful_shutdown(stopped(stop.clone())).into_future());
    tracing::debug!(%address, data_dir = %data_dir.display(), "recovering");

    let mut engine = tokio::select! {
        started = Engine::start(&config, lock, system_clock()) => match started {
            Ok(engine) => engine,
            Err(error) => {
                server.abort();
                return Err(error);
            }
        },
        () = stopped(stop.clone()) => {
            tracing::info!("stopped during recovery");
            server.abort();
            return Ok(());
        }
    };
    let webhooks = match engine.start_webhooks(&config, providers, system_clock()) {
        Ok(webhooks) => webhooks,
        Err(error) => {
            server.abort();
            engine.stop().await;
            return Err(error);
        }
    };
    state.set_webhooks(webhooks);
    state.set_snapshot_service(engine.snapshot_service().clone());
    state.set_ready(engine.ledger.clone());
    announce(address);
    tracing::info!(%address, data_dir = %data_dir.display(), accounts = engine.ledger.account_count(), "ready");

    let request_timeout = Duration::from_millis(config.server.request_timeout_ms);
    let served = tokio::select! {
        served = &mut server => served,
        () = async {
            stopped(stop.clone()).await;
            tokio::time::sleep(request_timeout + DRAIN_GRACE).await;
        } => {
            tracing::warn!("in-flight requests did not finish in time; closing their connections");
            server.abort();
            server.await
        }
    };
    tracing::info!("HTTP server stopped; stopping the ledger");
    engine.stop().await;
    upkeep.abort();
    sweeper.abort();
    tracing::info!("stopped");
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ServeError::Server(error)),
        Err(error) if error.is_cancelled() => Ok(()),
        Err(error) => Err(ServeError::Server(std::io::Error::other(error.to_string()))),
    }
}

/// Prints `listening on ADDR` on stdout (the one line tools wait for).
fn announce(address: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {address}");
    let _ = stdout.flush();
}

/// Logs to stderr (stdout carries only the `listening on` line), as text or JSON lines.
/// `RUST_LOG` sets the filter (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was installed already");
    }
}

/// A flag raised on the first SIGTERM or SIGINT.
fn spawn_signal_listener() -> watch::Receiver<bool> {
    let (raise, flag) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        let _ = raise.send(true);
    });
    flag
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves once the stop flag is raised (or its sender is gone).
async fn stopped(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// Forgets idle rate-limit buckets periodically.
async fn sweep_rate_limiter(state: Arc<AppState>) {
    let Some(limiter) = &state.rate_limiter else {
        return;
    };
    let mut interval = tokio::time::interval(http::auth::RATE_LIMIT_SWEEP_PERIOD);
    loop {
        interval.tick().await;
        limiter.forget_idle();
    }
}

/// A sequence as a gauge value (exact below 2^53, which any sequence here is).
fn seq_as_gauge(seq: u64) -> f64 {
    let high = f64::from(u32::try_from(seq >> 32).unwrap_or(u32::MAX));
    let low = f64::from(u32::try_from(seq & 0xffff_ffff).unwrap_or(u32::MAX));
    high * 4_294_967_296.0 + low
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_without_tokens_is_refused() {
        let args = ServeArgs { bind: Some("0.0.0.0:8080".parse().unwrap()), ..ServeArgs::default() };
        let error = load_config(&args, Vec::new()).unwrap_err();
        assert!(matches!(error, ServeError::NonLoopback { .. }), "{error}");
        assert!(!error.to_string().contains('\n'));
    }
}
