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

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actors::{Clock, LedgerHandle, LedgerSettings, OpenLedger, OpenSettings, SnapshotService, system_clock};
use axum::Router;
use config::{Config, LogFormat, process_environment};
use history::HistorySettings;
use metrics_exporter_prometheus::PrometheusHandle;
use snapshots::{RecoveryProgress, Retention};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{self, AppState};
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
    #[error(
        "refusing to listen on {address} without TLS while auth is on: set server.tls_cert_file and \
         server.tls_key_file, or server.plaintext = true when a proxy in front ends TLS"
    )]
    PlaintextNonLoopback { address: SocketAddr },
    #[error("{0}")]
    Auth(#[from] http::auth::AuthSetupError),
    #[error("cannot load the TLS certificate or key: {0}")]
    Tls(String),
    #[error("cannot open the audit log {}: {source}", path.display())]
    AuditLog { path: PathBuf, source: std::io::Error },
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

/// How often the log's watermark is written while the log moves.
const WATERMARK_PERIOD: Duration = Duration::from_secs(1);

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

/// With auth off, only a loopback address may be bound; with auth on, a non-loopback address
/// needs TLS or `server.plaintext = true`.
pub fn check_bind_allowed(config: &Config) -> Result<(), ServeError> {
    let address = config.server.bind;
    if address.ip().is_loopback() {
        return Ok(());
    }
    if !config.auth_enabled() {
        return Err(ServeError::NonLoopback { address });
    }
    if !config.tls_enabled() && !config.server.plaintext {
        return Err(ServeError::PlaintextNonLoopback { address });
    }
    Ok(())
}

/// The TLS acceptor of `config` (certificate chain and key from their PEM files), or `None`
/// without TLS.
pub fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert_file), Some(key_file)) = (&config.server.tls_cert_file, &config.server.tls_key_file) else {
        return Ok(None);
    };
    let named = |path: &Path, error: &dyn std::fmt::Display| ServeError::Tls(format!("{}: {error}", path.display()));
    let certificates = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| named(cert_file, &error))?;
    if certificates.is_empty() {
        return Err(named(cert_file, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| named(key_file, &error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| ServeError::Tls(error.to_string()))?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config))))
}

/// The listener's settings of `config`.
pub fn listener_settings(config: &Config, tls: Option<tokio_rustls::TlsAcceptor>) -> http::listener::ListenerSettings {
    http::listener::ListenerSettings {
        connections_max: config.server.connections_max,
        header_timeout: Duration::from_millis(config.server.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        tls,
    }
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
    actors::lock_data_dir(path).map_err(|error| match error {
        actors::OpenError::CreateDataDir { path, source } => ServeError::CreateDataDir { path, source },
        other => ServeError::Lock { path: path.to_owned(), reason: one_line(&other.to_string()) },
    })
}

/// The history's settings of `config`.
pub fn history_settings(config: &Config) -> HistorySettings {
    HistorySettings {
        cache_bytes: config.storage.history_cache_bytes,
        checkpoint_interval_ms: config.storage.history_checkpoint_interval_ms,
        ..HistorySettings::default()
    }
}

/// The retention of snapshots and log of `config`.
pub fn retention(config: &Config) -> Retention {
    Retention {
        snapshots_kept: config.storage.snapshots_kept,
        wal_retention_snapshots: config.storage.wal_retention_snapshots,
    }
}

/// How `config` opens its data dir, with `clock` for the ledger and its snapshots.
pub fn open_settings(config: &Config, clock: Clock) -> OpenSettings {
    let limits = &config.limits;
    OpenSettings {
        data_dir: config.storage.data_dir.clone(),
        ledger: LedgerSettings {
            shards: config.engine.shards,
            max_in_flight_transfers: limits.max_in_flight_transfers,
            max_in_flight_requests: limits.max_in_flight_requests,
            expiry_tick_ms: config.engine.expiry_tick_ms,
            clock: clock.clone(),
            // Expiry waits until the server has read the mode from the log (a read-only
            // ledger expires nothing): see `AppState::start_mode`.
            expiry_paused: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        },
        committer: snapshots::CommitterSettings {
            group_records_max: config.engine.commit_group_records_max,
            group_bytes_max: config.engine.commit_group_bytes_max,
            // Admission control (max_in_flight_transfers) bounds what the actors submit; the
            // queue holds twice the largest burst they can hand over at once.
            queue_records_max: limits
                .max_in_flight_transfers
                .max(limits.batch_max)
                .max(config.engine.commit_group_records_max)
                .saturating_mul(2),
        },
        history: history_settings(config),
        snapshot_interval: Duration::from_secs(config.storage.snapshot_interval_seconds),
        retention: retention(config),
        watermark_period: WATERMARK_PERIOD,
        clock,
    }
}

/// Recovery progress at info level at most every [`RECOVERY_PROGRESS_PERIOD`], for long
/// replays (every step at debug level).
pub fn log_recovery_progress() -> impl FnMut(RecoveryProgress) + Send + 'static {
    let started = std::time::Instant::now();
    let mut last_report = started;
    move |progress| {
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
    }
}

/// The durable ledger: recovered, with its committer, history, actors and snapshots running.
pub struct Engine {
    pub ledger: LedgerHandle,
    opened: OpenLedger,
}

impl Engine {
    /// Recovers the data dir held by `lock` and starts everything that runs while it is open.
    pub async fn start(config: &Config, lock: snapshots::DataDirLock, clock: Clock) -> Result<Engine, ServeError> {
        let data_dir = config.storage.data_dir.clone();
        let opened = actors::open_locked(open_settings(config, clock.clone()), lock, log_recovery_progress())
            .await
            .map_err(|error| match error {
                actors::OpenError::Recovery { path, source } => {
                    ServeError::Recovery { path, reason: one_line(&source.to_string()) }
                }
                other => ServeError::Start(one_line(&other.to_string())),
            })?;
        let recovery = &opened.recovery;
        let snapshot_seq = recovery.snapshot.as_ref().map_or(0, |snapshot| snapshot.seq);
        metrics::gauge!(http::metrics::SNAPSHOT_LAST_SEQ).set(seq_as_gauge(snapshot_seq));
        // The age of the newest snapshot counts from its creation, or from this start (which
        // replayed the log) when there is none yet.
        let snapshot_created_at_ms =
            recovery.snapshot.as_ref().map_or_else(|| clock(), |snapshot| snapshot.created_at_ms);
        actors::maintenance::record_snapshot_time(snapshot_created_at_ms);
        tracing::info!(
            data_dir = %data_dir.display(),
            last_seq = recovery.last_seq,
            snapshot_seq,
            replayed_records = recovery.replayed_records,
            history_reingested_records = recovery.reingested_records,
            accounts = recovery.accounts,
            "recovered"
        );
        Ok(Engine { ledger: opened.handle.clone(), opened })
    }

    /// Starts the webhook service; its bookkeeping lives in the history.
    pub fn start_webhooks(
        &self,
        config: &Config,
        providers: Providers,
        clock: Clock,
    ) -> Result<Arc<Webhooks>, ServeError> {
        let settings = WebhookSettings {
            providers,
            currencies: engine::CurrencyTable::new(
                config.currencies.iter().map(|currency| engine::Currency::new(&currency.code, currency.scale)),
            ),
            amount_max: config.limits.amount_max,
            clock,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        };
        let webhooks = Webhooks::start(settings, self.ledger.clone())
            .map_err(|error| ServeError::Start(one_line(&error.to_string())))?;
        crate::http::metrics::register_webhook_series(&webhooks);
        Ok(webhooks)
    }

    /// Snapshots and online backups of the served data dir.
    pub fn snapshot_service(&self) -> &Arc<SnapshotService> {
        &self.opened.snapshots
    }

    /// Stops everything in order ([`OpenLedger::close`]) and releases the data dir.
    pub async fn stop(self) {
        self.opened.close().await;
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
    let engine = Engine::start(config, lock, options.clock.clone()).await?;
    let webhooks = match engine.start_webhooks(config, providers, options.clock.clone()) {
        Ok(webhooks) => webhooks,
        Err(error) => {
            engine.stop().await;
            return Err(error);
        }
    };
    let state = Arc::new(AppState::new(config, options.prometheus).with_clock(options.clock.clone()));
    if let Err(error) = state.open_audit_log(config) {
        engine.stop().await;
        return Err(error);
    }
    state.set_webhooks(webhooks);
    state.set_snapshot_service(engine.snapshot_service().clone());
    if let Err(reason) = state.start_mode(&engine.ledger) {
        engine.stop().await;
        return Err(ServeError::Start(reason));
    }
    state.set_ready(engine.ledger.clone());
    Ok(App { router: http::router(state.clone()), state, engine })
}

impl App {
    /// The ledger behind the router.
    pub fn ledger(&self) -> &LedgerHandle {
        &self.engine.ledger
    }

    /// Writes the audit log's last lines, stops the ledger and releases the data dir.
    pub async fn shutdown(self) {
        self.state.close_audit_log();
        self.engine.stop().await;
    }
}

/// The server's whole life, on a runtime.
async fn serve(config: Config, providers: Providers) -> Result<(), ServeError> {
    init_logging(config.server.log_format);
    let environment = process_environment();
    let lookup = |name: &str| environment.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let authenticator = http::auth::Authenticator::from_config(&config, lookup)?;
    let tls = tls_acceptor(&config)?;
    let stop = spawn_signal_listener();
    let data_dir = config.storage.data_dir.clone();
    let lock = open_data_dir(&data_dir)?;
    let bind = config.server.bind;
    let listener = TcpListener::bind(bind).await.map_err(|source| ServeError::Bind { address: bind, source })?;
    let address = listener.local_addr().map_err(|source| ServeError::Bind { address: bind, source })?;

    let prometheus = http::metrics::install_recorder();
    let state = Arc::new(AppState::with_authenticator(&config, Some(prometheus.clone()), authenticator));
    state.open_audit_log(&config)?;
    let upkeep = tokio::spawn(http::metrics::run_upkeep(prometheus, METRICS_UPKEEP_PERIOD));
    let sweeper = tokio::spawn(sweep_rate_limiter(state.clone()));
    let mut server = tokio::spawn(http::listener::serve_connections(
        listener,
        http::router(state.clone()),
        listener_settings(&config, tls),
        stop.clone(),
    ));
    tracing::debug!(%address, data_dir = %data_dir.display(), "recovering");

    let engine = tokio::select! {
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
    if let Err(reason) = state.start_mode(&engine.ledger) {
        server.abort();
        engine.stop().await;
        return Err(ServeError::Start(reason));
    }
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
    state.close_audit_log();
    engine.stop().await;
    upkeep.abort();
    sweeper.abort();
    tracing::info!("stopped");
    match served {
        Ok(()) => Ok(()),
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

/// Forgets idle rate-limit buckets and finished failure windows periodically.
async fn sweep_rate_limiter(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(http::auth::RATE_LIMIT_SWEEP_PERIOD);
    loop {
        interval.tick().await;
        if let Some(limiter) = &state.rate_limiter {
            limiter.forget_idle();
        }
        state.failure_limiter.forget_expired(std::time::Instant::now());
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

    #[test]
    fn non_loopback_with_auth_needs_tls_or_plaintext_on_purpose() {
        let mut config = config::default_config();
        config.server.bind = "0.0.0.0:8080".parse().unwrap();
        config.auth.tokens.push(config::TokenConfig { name: None, sha256: "ab".repeat(32), role: config::Role::Admin });
        let error = check_bind_allowed(&config).unwrap_err();
        assert!(matches!(error, ServeError::PlaintextNonLoopback { .. }), "{error}");
        assert!(error.to_string().contains("server.plaintext"), "{error}");
        config.server.plaintext = true;
        check_bind_allowed(&config).unwrap();
        config.server.plaintext = false;
        config.server.tls_cert_file = Some(PathBuf::from("/etc/cert.pem"));
        config.server.tls_key_file = Some(PathBuf::from("/etc/key.pem"));
        check_bind_allowed(&config).unwrap();
        config.server.bind = "127.0.0.1:8080".parse().unwrap();
        config.server.tls_cert_file = None;
        config.server.tls_key_file = None;
        check_bind_allowed(&config).unwrap();
    }
}
