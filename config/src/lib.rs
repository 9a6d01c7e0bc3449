//! ledgerd's typed configuration.
//!
//! This module owns the shape of the TOML configuration (section 6 of the contract), its
//! embedded default ([`DEFAULT_CONFIG_TOML`], the file `config/default.toml`), the layering of a
//! user file on top of that default ([`parse`]), the environment overrides
//! `LEDGERD_<SECTION>__<KEY>` ([`apply_overrides`]) and every validation rule
//! ([`Config::validate`]). Every error names the key at fault ([`ConfigError`]).
//!
//! [`sources`] layers the default, a file, the environment and the command line's flags into
//! one validated [`Config`]; everything else here is pure (no file, no environment, no clock).
//! Each other crate takes its own small settings struct, built from this one by the binary.

pub mod sources;

pub use sources::{LoadError, Sources, load, process_environment};

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

/// The complete embedded default configuration (`config/default.toml`), with comments.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default.toml");

/// The largest `limits.amount_max`: 10^24 currency units, the bound on every account total.
pub const AMOUNT_MAX_CEILING: u128 = 1_000_000_000_000_000_000_000_000;

/// One GiB, the largest `server.body_limit_bytes` and `engine.commit_group_bytes_max`.
const GIB_BYTES: usize = 1 << 30;

/// Sections whose scalar keys may be overridden by `LEDGERD_<SECTION>__<KEY>`.
const OVERRIDABLE_SECTIONS: [&str; 6] = ["server", "storage", "limits", "engine", "auth", "rate_limit"];

/// Prefix of the environment variables read as overrides.
const OVERRIDE_PREFIX: &str = "LEDGERD_";

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// The whole configuration. Absent keys take the values of [`DEFAULT_CONFIG_TOML`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the HTTP listener.
    pub server: ServerConfig,
    /// `[storage]`: the data directory, snapshots and log retention.
    pub storage: StorageConfig,
    /// `[limits]`: bounds on what clients may send.
    pub limits: LimitsConfig,
    /// `[engine]`: sharding, commit grouping and expiry.
    pub engine: EngineConfig,
    /// `[[currencies]]`: the currencies the ledger knows. A file that lists any replaces the
    /// whole default list.
    pub currencies: Vec<CurrencyConfig>,
    /// `[auth]`: bearer tokens. None = auth off.
    pub auth: AuthConfig,
    /// `[rate_limit]`: per-token request rate limit. Off by default.
    pub rate_limit: RateLimitConfig,
    /// `[webhooks]`: payment providers whose webhooks are accepted.
    pub webhooks: WebhooksConfig,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on (`"127.0.0.1:8080"`). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Largest accepted request body (413 beyond it). 1 byte to 1 GiB.
    pub body_limit_bytes: usize,
    /// Longest time a request may take. 1 ms to one hour.
    pub request_timeout_ms: u64,
    /// Format of log lines.
    pub log_format: LogFormat,
    /// Most connections open at once (1 to 1,000,000). At the limit, idle connections and
    /// connections that have not finished a request head are closed, oldest first, to make
    /// room; new ones are refused only when every open one is busy.
    pub connections_max: usize,
    /// A request head must arrive within this long of its first byte (of the connection, for
    /// the first request), else the connection is closed. 1 ms to one hour.
    pub header_timeout_ms: u64,
    /// A keep-alive connection idle this long is closed. 1 ms to one day.
    pub idle_timeout_ms: u64,
    /// PEM certificate chain: with `tls_key_file`, the server speaks HTTPS only. Empty = off.
    #[serde(with = "optional_path")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`. Empty = off.
    #[serde(with = "optional_path")]
    pub tls_key_file: Option<PathBuf>,
    /// With auth on, a non-loopback bind without TLS is refused unless this is `true` (TLS is
    /// ended by a proxy in front).
    pub plaintext: bool,
    /// Origins (`https://app.example.com`) whose browsers may call the API (CORS). Empty = no
    /// CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    /// File the audit log of every write request is appended to. Empty = off.
    #[serde(with = "optional_path")]
    pub audit_log: Option<PathBuf>,
    /// Start read-only (the kill switch): every write answers 503 `read_only`.
    pub read_only: bool,
}

/// Format of log lines (`server.log_format`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `"text"`: human-readable lines.
    Text,
    /// `"json"`: one JSON object per line.
    Json,
}

/// `[storage]`: the data directory, snapshots and log retention.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding the log and the snapshots. Created when missing.
    pub data_dir: PathBuf,
    /// Seconds between periodic snapshots; 0 = only on demand. At most one year.
    pub snapshot_interval_seconds: u64,
    /// Number of newest snapshots kept (1 to 1000).
    pub snapshots_kept: usize,
    /// 0 = keep the whole log; N = drop log groups older than the Nth newest snapshot.
    /// At most `snapshots_kept`.
    pub wal_retention_snapshots: usize,
    /// Bytes of the history's page cache (reads of stored transfers, histories and facts that
    /// are no longer in memory), at least 1 MiB.
    pub history_cache_bytes: u64,
    /// At most this long between two checkpoints of the history while records arrive (its
    /// watermark, so the most log a restart ingests again), 10 to 60000.
    pub history_checkpoint_interval_ms: u64,
}

/// `[limits]`: bounds on what clients may send.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest amount of one transfer, in currency units: a positive integer, at most 10^24.
    /// Written in TOML as a string of decimal digits (`"1000000000000000"`).
    #[serde(with = "amount_max_text")]
    pub amount_max: u128,
    /// Most transfers in one batch request (1 to 100000).
    pub batch_max: usize,
    /// Admission bound of the engine: transfers accepted but not yet committed; beyond it
    /// requests get 503 `overloaded`.
    pub max_in_flight_transfers: usize,
    /// Admission bound of every other request that reaches the engine (account creation and
    /// reads, freezes, transfer and history reads, payment facts): in flight at once; beyond
    /// it requests get 503 `overloaded`.
    pub max_in_flight_requests: usize,
    /// Largest `limit` of the transfer history of an account.
    pub history_limit_max: usize,
    /// Most metadata pairs on an account or a transfer.
    pub metadata_entries_max: usize,
    /// Longest metadata key, in characters.
    pub metadata_key_chars_max: usize,
    /// Longest metadata value, in characters.
    pub metadata_value_chars_max: usize,
    /// Longest transfer description, in characters.
    pub description_chars_max: usize,
}

/// `[engine]`: sharding, commit grouping and expiry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Number of account shard actors (1 to 256).
    pub shards: usize,
    /// Most log records in one commit group (one write, one fsync).
    pub commit_group_records_max: usize,
    /// Most encoded bytes in one commit group.
    pub commit_group_bytes_max: usize,
    /// Period of the pending-transfer expiry check (1 to 1000 ms).
    pub expiry_tick_ms: u64,
}

/// One `[[currencies]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CurrencyConfig {
    /// Currency code: 1 to 12 characters of `A-Z a-z 0-9`, unique.
    pub code: String,
    /// Fractional digits of amounts in this currency (0 to 18).
    pub scale: u32,
}

/// `[auth]`: bearer tokens and JWT issuers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`. With no tokens and no JWT entries, auth is off.
    pub tokens: Vec<TokenConfig>,
    /// Failed authentications allowed per client address within a minute (1 to 1,000,000);
    /// beyond them every `/v1` request from that address answers 429 until the minute passed.
    pub failures_per_minute: u32,
    /// `[[auth.jwt]]`: issuers of JWT bearer tokens. Each turns auth on like a token does.
    pub jwt: Vec<JwtConfig>,
}

/// One `[[auth.tokens]]` entry: the SHA-256 of a bearer token, its name and its role.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in the audit log and metrics (never the token): 1 to 64 characters of
    /// `A-Z a-z 0-9 _ - .`, unique. Absent: `token-{index}` (see [`TokenConfig::display_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hex SHA-256 of the token (64 hex digits, either case), unique.
    pub sha256: String,
    /// What the token may do.
    pub role: Role,
}

/// One `[[auth.jwt]]` entry: who may issue JWT bearer tokens, and how they are checked.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Name of the issuer entry (logs, metrics): 1 to 64 characters of `A-Z a-z 0-9 _ - .`,
    /// unique.
    pub name: String,
    /// The signature algorithm a token's header must name.
    pub algorithm: JwtAlgorithm,
    /// `HS256` only (required there): environment variable holding the raw secret, at least
    /// 32 bytes (read at start, not here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `RS256` and `EdDSA` only (required there): PEM file of the public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` of the tokens.
    pub issuer: String,
    /// Required `aud` of the tokens.
    pub audience: String,
    /// Claim holding the role, `"client"` or `"admin"`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
}

/// Signature algorithm of a JWT issuer (`auth.jwt[].algorithm`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    #[serde(rename = "HS256")]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, checked with a public key.
    #[serde(rename = "RS256")]
    Rs256,
    /// Ed25519, checked with a public key.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// Role of a bearer token.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `"client"`: the ordinary `/v1` routes.
    Client,
    /// `"admin"`: every route, administrative ones (freeze, unfreeze) included.
    Admin,
}

/// `[rate_limit]`: per-token request rate limit.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second per token (per client address when auth is off); 0 = off.
    pub per_token_per_second: u32,
    /// Requests allowed in a burst; 0 = equal to `per_token_per_second`. Otherwise at least
    /// `per_token_per_second`.
    pub burst: u32,
}

/// `[webhooks]`: payment providers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// `[[webhooks.providers]]`. Empty by default.
    pub providers: Vec<ProviderConfig>,
}

/// One `[[webhooks.providers]]` entry.
///
/// Its `Debug` output hides a literal `secret`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name in `POST /v1/webhooks/{name}` and in derived ids: 1 to 64 characters of
    /// `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    /// How deliveries are signed and what they carry.
    pub scheme: ProviderScheme,
    /// The signing secret itself. For `standard`: `whsec_` followed by base64. Exactly one of
    /// `secret` and `secret_env` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Name of the environment variable holding the secret (read by the caller, not here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `ccpayment` only (required there): the application id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `ccpayment` only (required there): base URL of the provider's API, `http://` or
    /// `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Deliveries whose timestamp is further than this from now are stale (1 to 86400).
    #[serde(default = "default_replay_window_seconds")]
    pub replay_window_seconds: u64,
    /// `ccpayment`: timeout of each fetch of a record from the provider's API.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
    /// `ccpayment`: retries of a failed fetch (0 to 10).
    #[serde(default = "default_fetch_retries")]
    pub fetch_retries: u32,
}

/// Signature scheme of a webhook provider.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProviderScheme {
    /// `"standard"`: Standard Webhooks 1.0.
    Standard,
    /// `"ccpayment"`: CCPayment API v2.
    Ccpayment,
}

// ---------------------------------------------------------------------------------------------
// Defaults. They equal the values of `config/default.toml`; the unit test
// `struct_defaults_equal_the_embedded_default` holds the two together.
// ---------------------------------------------------------------------------------------------

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            engine: EngineConfig::default(),
            currencies: default_currencies(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 10_000,
            log_format: LogFormat::Text,
            connections_max: 10_000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            tls_cert_file: None,
            tls_key_file: None,
            plaintext: false,
            cors_allowed_origins: Vec::new(),
            audit_log: None,
            read_only: false,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            snapshot_interval_seconds: 300,
            snapshots_kept: 3,
            wal_retention_snapshots: 0,
            history_cache_bytes: 64 << 20,
            history_checkpoint_interval_ms: 1000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            amount_max: 1_000_000_000_000_000,
            batch_max: 8190,
            max_in_flight_transfers: 65_536,
            max_in_flight_requests: 16_384,
            history_limit_max: 1000,
            metadata_entries_max: 16,
            metadata_key_chars_max: 64,
            metadata_value_chars_max: 256,
            description_chars_max: 256,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 1,
            commit_group_records_max: 16_384,
            commit_group_bytes_max: 4 * 1024 * 1024,
            expiry_tick_ms: 100,
        }
    }
}

fn default_currencies() -> Vec<CurrencyConfig> {
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("BTC", 8), ("USDT", 6), ("ETH", 18)]
        .into_iter()
        .map(|(code, scale)| CurrencyConfig { code: code.to_owned(), scale })
        .collect()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { tokens: Vec::new(), failures_per_minute: 60, jwt: Vec::new() }
    }
}

fn default_role_claim() -> String {
    "role".to_owned()
}

fn default_replay_window_seconds() -> u64 {
    300
}

fn default_fetch_timeout_ms() -> u64 {
    5000
}

fn default_fetch_retries() -> u32 {
    2
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A 1-based line and column in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "line {}, column {}", self.line, self.column)
    }
}

/// Why a configuration is rejected. Its `Display` is one line naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file has a key the configuration does not know.
    #[error("invalid config: unknown key `{key}`{} ({message})", at_position(.position))]
    UnknownKey {
        /// Dotted path of the key, e.g. `server.bnd` or `webhooks.providers[0].secrett`.
        key: String,
        /// Where the key is written.
        position: Option<Position>,
        /// toml's message, listing the expected keys.
        message: String,
    },
    /// The file is not valid TOML, or a value has the wrong type or form.
    #[error("invalid config: {}{message}{}", key_prefix(.key), in_parentheses(.position))]
    Malformed {
        /// Dotted path of the key at fault, when one can be named.
        key: Option<String>,
        /// Where the fault is.
        position: Option<Position>,
        /// toml's message.
        message: String,
    },
    /// A value breaks a rule of [`Config::validate`].
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// Dotted path of the key at fault, e.g. `limits.batch_max` or `currencies[2].code`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override names no overridable key.
    #[error(
        "invalid config: unknown key `{variable}`: environment overrides accept only the \
         scalar keys of [server], [storage], [limits], [engine], [auth] and [rate_limit], as \
         LEDGERD_<SECTION>__<KEY>"
    )]
    UnknownOverride {
        /// The environment variable, e.g. `LEDGERD_SERVER__BINDD`.
        variable: String,
    },
    /// An environment override has a value its key cannot take.
    #[error("invalid config: {variable} ({key}): {message}")]
    InvalidOverride {
        /// The environment variable, e.g. `LEDGERD_LIMITS__BATCH_MAX`.
        variable: String,
        /// Dotted path of the key it sets, e.g. `limits.batch_max`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The key at fault, where known: a dotted path such as `limits.batch_max` or
    /// `webhooks.providers[0].secret`; for an unknown override, the environment variable.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::InvalidOverride { key, .. } => Some(key),
            ConfigError::Malformed { key, .. } => key.as_deref(),
            ConfigError::UnknownOverride { variable } => Some(variable),
        }
    }

    /// The environment variable at fault, for errors of [`apply_overrides`].
    pub fn variable(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownOverride { variable } | ConfigError::InvalidOverride { variable, .. } => Some(variable),
            _ => None,
        }
    }

    /// Where in the file the fault is, for errors of [`parse`] that toml located.
    pub fn position(&self) -> Option<Position> {
        match self {
            ConfigError::UnknownKey { position, .. } | ConfigError::Malformed { position, .. } => *position,
            _ => None,
        }
    }

    fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

fn at_position(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |position| format!(" at {position}"))
}

fn in_parentheses(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |position| format!(" ({position})"))
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map_or_else(String::new, |key| format!("{key}: "))
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses a config file on top of the embedded default: absent keys take the default's values,
/// a `[[currencies]]` list replaces the default list. The result is validated.
pub fn parse(toml_text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(toml_text).map_err(|error| toml_error(toml_text, &error))?;
    config.validate()?;
    Ok(config)
}

/// The embedded default configuration, parsed from [`DEFAULT_CONFIG_TOML`].
pub fn default_config() -> Config {
    // The fallback is not reached: the unit tests `default_config_parses_and_validates` and
    // `struct_defaults_equal_the_embedded_default` prove that the embedded text parses,
    // validates and equals `Config::default()`, so both paths give the same value.
    parse(DEFAULT_CONFIG_TOML).unwrap_or_default()
}

/// Turns an error of `toml::from_str` into a [`ConfigError`] naming the key at fault.
fn toml_error(toml_text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().to_owned();
    let span = error.span();
    let position = span.as_ref().map(|span| position_of(toml_text, span.start));
    let key = span.and_then(|span| key_at_span(toml_text, &span));
    match key {
        Some(key) if message.starts_with("unknown field `") => ConfigError::UnknownKey { key, position, message },
        key => {
            // For a missing field toml points at the table lacking it; name the field itself.
            let key = match (quoted_after(&message, "missing field `"), key) {
                (Some(field), Some(table)) => Some(format!("{table}.{field}")),
                (Some(field), None) => Some(field.to_owned()),
                (None, key) => key,
            };
            ConfigError::Malformed { key, position, message }
        }
    }
}

/// The text between `prefix` and the next backquote, when `message` starts with `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(quoted, _)| quoted)
}

/// The 1-based line and column of byte `offset` of `text`.
fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
}

/// The dotted path of the deepest key or value whose span holds the start of toml's error
/// `span` (toml points at the key for an unknown key, at the value for a bad value, at the
/// table for a missing field).
fn key_at_span(toml_text: &str, span: &Range<usize>) -> Option<String> {
    let (document, _errors) = DeTable::parse_recoverable(toml_text);
    let mut best: Option<(usize, String)> = None;
    find_in_table(document.get_ref(), "", 0, span.start, &mut best);
    best.map(|(_, path)| path)
}

fn find_in_table(table: &DeTable<'_>, prefix: &str, depth: usize, offset: usize, best: &mut Option<(usize, String)>) {
    for (key, value) in table.iter() {
        let path = join_key(prefix, key.get_ref());
        consider(&path, depth, &key.span(), offset, best);
        find_in_value(value, &path, depth, offset, best);
    }
}

fn find_in_value(
    value: &toml::Spanned<DeValue<'_>>,
    path: &str,
    depth: usize,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    consider(path, depth, &value.span(), offset, best);
    match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, path, depth + 1, offset, best),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                find_in_value(item, &format!("{path}[{index}]"), depth + 1, offset, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` as the best match when its `candidate` span holds `offset` and it is deeper
/// than the best so far.
fn consider(path: &str, depth: usize, candidate: &Range<usize>, offset: usize, best: &mut Option<(usize, String)>) {
    let holds = candidate.start <= offset && offset < candidate.end;
    let deeper = best.as_ref().is_none_or(|(best_depth, _)| depth > *best_depth);
    if holds && deeper {
        *best = Some((depth, path.to_owned()));
    }
}

/// Appends `key` to a dotted path, quoting it when it is not a bare TOML key.
fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    let key = if bare { key.to_owned() } else { format!("\"{}\"", key.escape_debug()) };
    if prefix.is_empty() { key } else { format!("{prefix}.{key}") }
}

/// Serde of `limits.amount_max`: a TOML string of decimal digits (TOML integers stop at
/// 2^63, below the ceiling), held as whole currency units.
mod amount_max_text {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        deserializer.deserialize_str(AmountMaxVisitor)
    }

    struct AmountMaxVisitor;

    impl Visitor<'_> for AmountMaxVisitor {
        type Value = u128;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a string of decimal digits such as \"1000000000000000\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u128, E> {
            super::parse_amount_max(text).map_err(E::custom)
        }
    }
}

/// Serde of the optional path keys (`server.tls_cert_file`, `server.audit_log`): written as a
/// string, the empty string meaning "off", so that every key has a value in the embedded
/// default and can be set by an environment variable.
mod optional_path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(path) => serializer.collect_str(&path.display()),
            None => serializer.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }
}

/// Parses `limits.amount_max`: decimal digits only, positive, at most 10^24.
fn parse_amount_max(text: &str) -> Result<u128, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "must be a string of decimal digits (a positive integer), got \"{}\"",
            text.escape_debug()
        ));
    }
    let significant = text.trim_start_matches('0');
    // More than 25 significant digits is above 10^24 (and may not fit a u128).
    let value = if significant.len() > 25 { None } else { significant.parse::<u128>().ok() };
    match value {
        _ if significant.is_empty() => Err("must be positive, got 0".to_owned()),
        Some(value) if value <= AMOUNT_MAX_CEILING => Ok(value),
        _ => Err(format!("must be at most 10^24, got {text}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------------------------

/// Applies environment overrides to `config`, then validates it.
///
/// Each override is `(name, value)` where `name` is the environment variable without its
/// `LEDGERD_` prefix, `<SECTION>__<KEY>` (e.g. `("SERVER__BIND", "0.0.0.0:9000")`), matched
/// case-insensitively against the scalar keys of `[server]`, `[storage]`, `[limits]`,
/// `[engine]` and `[rate_limit]`. The value is read as the key's type (integer, string,
/// boolean). Later overrides of the same key win. On error `config` is left unchanged.
pub fn apply_overrides(config: &mut Config, overrides: &[(String, String)]) -> Result<(), ConfigError> {
    let Some((first_name, _)) = overrides.first() else {
        return config.validate();
    };
    let mut document = toml::Table::try_from(&*config).map_err(|error| {
        // Only reached for a config built in code with a value TOML cannot hold (an integer
        // above i64::MAX, a non-UTF-8 path).
        ConfigError::InvalidOverride {
            variable: format!("{OVERRIDE_PREFIX}{first_name}"),
            key: "config".to_owned(),
            message: format!("the configuration cannot be written as TOML: {error}"),
        }
    })?;
    let mut updated = config.clone();
    // (environment variable, dotted key) of every override applied, for error messages.
    let mut applied: Vec<(String, String)> = Vec::with_capacity(overrides.len());
    for (name, text) in overrides {
        let variable = format!("{OVERRIDE_PREFIX}{name}");
        let Some((section_name, key_name)) = overridable_key(&document, name) else {
            return Err(ConfigError::UnknownOverride { variable });
        };
        let key = format!("{section_name}.{key_name}");
        let invalid =
            |message: String| ConfigError::InvalidOverride { variable: variable.clone(), key: key.clone(), message };
        let slot = document
            .get_mut(&section_name)
            .and_then(toml::Value::as_table_mut)
            .and_then(|section| section.get_mut(&key_name))
            .ok_or_else(|| ConfigError::UnknownOverride { variable: variable.clone() })?;
        *slot = override_value(slot, text).map_err(invalid)?;
        // Read the document back now, so that a value of the wrong form is blamed on this
        // override and no other.
        updated = toml::Value::Table(document.clone())
            .try_into()
            .map_err(|error: toml::de::Error| invalid(error.message().trim().to_owned()))?;
        applied.retain(|(_, applied_key)| *applied_key != key);
        applied.push((variable, key));
    }
    updated.validate().map_err(|error| {
        let overridden = applied.iter().find(|(_, key)| Some(key.as_str()) == error.key());
        match (overridden, error) {
            (Some((variable, key)), ConfigError::Invalid { message, .. }) => {
                ConfigError::InvalidOverride { variable: variable.clone(), key: key.clone(), message }
            }
            (_, error) => error,
        }
    })?;
    *config = updated;
    Ok(())
}

/// The (section, key) of `document` an override name `<SECTION>__<KEY>` designates, matched
/// case-insensitively; `None` unless it is a key of an overridable section.
fn overridable_key(document: &toml::Table, name: &str) -> Option<(String, String)> {
    let (section_name, key_name) = name.split_once("__")?;
    let section_name = section_name.to_ascii_lowercase();
    let key_name = key_name.to_ascii_lowercase();
    if !OVERRIDABLE_SECTIONS.contains(&section_name.as_str()) {
        return None;
    }
    let section = document.get(&section_name)?.as_table()?;
    // Lists and tables (`auth.tokens`, `server.cors_allowed_origins`) are set in the file only.
    let scalar =
        section.get(&key_name).is_some_and(|value| !matches!(value, toml::Value::Array(_) | toml::Value::Table(_)));
    scalar.then_some((section_name, key_name))
}

/// Reads an override's text as the type of the value it replaces.
fn override_value(current: &toml::Value, text: &str) -> Result<toml::Value, String> {
    match current {
        toml::Value::String(_) => Ok(toml::Value::String(text.to_owned())),
        toml::Value::Integer(_) => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got \"{}\"", text.escape_debug())),
        toml::Value::Boolean(_) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got \"{}\"", text.escape_debug())),
        },
        toml::Value::Float(_) => text
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, got \"{}\"", text.escape_debug())),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("not a scalar key; it can only be set in the config file".to_owned())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and helpers
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Checks every rule a configuration must meet; the first broken rule is returned, naming
    /// its key. Called by [`parse`] and [`apply_overrides`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_storage()?;
        self.validate_limits()?;
        self.validate_engine()?;
        self.validate_currencies()?;
        self.validate_auth()?;
        self.validate_rate_limit()?;
        self.validate_webhooks()
    }

    /// Whether auth is on: at least one token or JWT issuer is configured.
    pub fn auth_enabled(&self) -> bool {
        !self.auth.tokens.is_empty() || !self.auth.jwt.is_empty()
    }

    /// Whether the server speaks HTTPS (a certificate and its key are configured).
    pub fn tls_enabled(&self) -> bool {
        self.server.tls_cert_file.is_some() && self.server.tls_key_file.is_some()
    }

    /// The configured currency with exactly this code.
    pub fn currency(&self, code: &str) -> Option<&CurrencyConfig> {
        self.currencies.iter().find(|currency| currency.code == code)
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        check_range("server.body_limit_bytes", server.body_limit_bytes, 1, GIB_BYTES)?;
        check_range("server.request_timeout_ms", server.request_timeout_ms, 1, 3_600_000)?;
        check_range("server.connections_max", server.connections_max, 1, 1_000_000)?;
        check_range("server.header_timeout_ms", server.header_timeout_ms, 1, 3_600_000)?;
        check_range("server.idle_timeout_ms", server.idle_timeout_ms, 1, 86_400_000)?;
        match (&server.tls_cert_file, &server.tls_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::invalid("server.tls_key_file", "is required with server.tls_cert_file"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid("server.tls_cert_file", "is required with server.tls_key_file"));
            }
            _ => {}
        }
        let mut seen = HashSet::new();
        for (index, origin) in server.cors_allowed_origins.iter().enumerate() {
            let key = format!("server.cors_allowed_origins[{index}]");
            if !is_origin(origin) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "must be an origin: http:// or https://, a host and an optional port, no path, got \"{}\"",
                        origin.escape_debug()
                    ),
                ));
            }
            if !seen.insert(origin.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(key, format!("duplicate origin \"{origin}\"")));
            }
        }
        Ok(())
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let storage = &self.storage;
        if storage.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.data_dir", "must not be empty"));
        }
        check_range("storage.snapshot_interval_seconds", storage.snapshot_interval_seconds, 0, 31_536_000)?;
        check_range("storage.snapshots_kept", storage.snapshots_kept, 1, 1000)?;
        check_range("storage.history_cache_bytes", storage.history_cache_bytes, 1 << 20, 1 << 40)?;
        check_range("storage.history_checkpoint_interval_ms", storage.history_checkpoint_interval_ms, 10, 60_000)?;
        if storage.wal_retention_snapshots > storage.snapshots_kept {
            return Err(ConfigError::invalid(
                "storage.wal_retention_snapshots",
                format!(
                    "must be at most storage.snapshots_kept ({}), got {}",
                    storage.snapshots_kept, storage.wal_retention_snapshots
                ),
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let amount_max = limits.amount_max;
        if amount_max == 0 {
            return Err(ConfigError::invalid("limits.amount_max", "must be a positive integer, got 0"));
        }
        if amount_max > AMOUNT_MAX_CEILING {
            return Err(ConfigError::invalid("limits.amount_max", format!("must be at most 10^24, got {amount_max}")));
        }
        check_range("limits.batch_max", limits.batch_max, 1, 100_000)?;
        check_range("limits.max_in_flight_transfers", limits.max_in_flight_transfers, 1, 16_777_216)?;
        check_range("limits.max_in_flight_requests", limits.max_in_flight_requests, 1, 1_048_576)?;
        check_range("limits.history_limit_max", limits.history_limit_max, 1, 100_000)?;
        check_range("limits.metadata_entries_max", limits.metadata_entries_max, 0, 1024)?;
        check_range("limits.metadata_key_chars_max", limits.metadata_key_chars_max, 1, 65_536)?;
        check_range("limits.metadata_value_chars_max", limits.metadata_value_chars_max, 1, 65_536)?;
        check_range("limits.description_chars_max", limits.description_chars_max, 1, 65_536)
    }

    fn validate_engine(&self) -> Result<(), ConfigError> {
        let engine = &self.engine;
        check_range("engine.shards", engine.shards, 1, 256)?;
        check_range("engine.commit_group_records_max", engine.commit_group_records_max, 1, 1_048_576)?;
        check_range("engine.commit_group_bytes_max", engine.commit_group_bytes_max, 1, GIB_BYTES)?;
        // The contract releases an expired hold within one second of its deadline.
        check_range("engine.expiry_tick_ms", engine.expiry_tick_ms, 1, 1000)
    }

    fn validate_currencies(&self) -> Result<(), ConfigError> {
        if self.currencies.is_empty() {
            return Err(ConfigError::invalid("currencies", "at least one currency is needed"));
        }
        let mut seen = HashSet::new();
        for (index, currency) in self.currencies.iter().enumerate() {
            let code = &currency.code;
            let valid = (1..=12).contains(&code.len()) && code.bytes().all(|byte| byte.is_ascii_alphanumeric());
            if !valid {
                return Err(ConfigError::invalid(
                    format!("currencies[{index}].code"),
                    format!("must be 1 to 12 characters of A-Z a-z 0-9, got \"{}\"", code.escape_debug()),
                ));
            }
            if !seen.insert(code.to_ascii_uppercase()) {
                return Err(ConfigError::invalid(
                    format!("currencies[{index}].code"),
                    format!("duplicate currency code \"{code}\""),
                ));
            }
            check_range(&format!("currencies[{index}].scale"), currency.scale, 0, 18)?;
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        check_range("auth.failures_per_minute", self.auth.failures_per_minute, 1, 1_000_000)?;
        let mut names = HashSet::new();
        for (index, token) in self.auth.tokens.iter().enumerate() {
            if let Some(name) = &token.name {
                check_name(&format!("auth.tokens[{index}].name"), name)?;
            }
            if !names.insert(token.display_name(index)) {
                return Err(ConfigError::invalid(format!("auth.tokens[{index}].name"), "duplicate token name"));
            }
        }
        let mut jwt_names = HashSet::new();
        for (index, jwt) in self.auth.jwt.iter().enumerate() {
            let prefix = format!("auth.jwt[{index}]");
            check_name(&format!("{prefix}.name"), &jwt.name)?;
            if !jwt_names.insert(jwt.name.clone()) {
                return Err(ConfigError::invalid(format!("{prefix}.name"), "duplicate JWT issuer name"));
            }
            jwt.validate(&prefix)?;
        }
        let mut seen = HashSet::new();
        for (index, token) in self.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{index}].sha256");
            let mut digest = [0_u8; 32];
            if token.sha256.len() != 64 || hex::decode_to_slice(&token.sha256, &mut digest).is_err() {
                return Err(ConfigError::invalid(key, "must be the SHA-256 of the token as 64 hex digits"));
            }
            if !seen.insert(digest) {
                return Err(ConfigError::invalid(key, "duplicate token"));
            }
        }
        Ok(())
    }

    fn validate_rate_limit(&self) -> Result<(), ConfigError> {
        let rate_limit = &self.rate_limit;
        if rate_limit.burst != 0 && rate_limit.burst < rate_limit.per_token_per_second {
            return Err(ConfigError::invalid(
                "rate_limit.burst",
                format!(
                    "must be 0 (= per_token_per_second) or at least \
                     rate_limit.per_token_per_second ({}), got {}",
                    rate_limit.per_token_per_second, rate_limit.burst
                ),
            ));
        }
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for (index, provider) in self.webhooks.providers.iter().enumerate() {
            let prefix = format!("webhooks.providers[{index}]");
            let name = &provider.name;
            let valid = (1..=64).contains(&name.len())
                && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
            if !valid {
                return Err(ConfigError::invalid(
                    format!("{prefix}.name"),
                    format!("must be 1 to 64 characters of A-Z a-z 0-9 _ -, got \"{}\"", name.escape_debug()),
                ));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.name"),
                    format!("duplicate provider name \"{name}\""),
                ));
            }
            provider.validate(&prefix)?;
        }
        Ok(())
    }
}

impl ProviderConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        match (&self.secret, &self.secret_env) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.secret"),
                    "set exactly one of `secret` and `secret_env`",
                ));
            }
            (None, Some(variable)) if !is_environment_variable_name(variable) => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.secret_env"),
                    format!(
                        "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got \"{}\"",
                        variable.escape_debug()
                    ),
                ));
            }
            _ => {}
        }
        match self.scheme {
            ProviderScheme::Standard => {
                if let Some(secret) = &self.secret {
                    let valid = secret.strip_prefix("whsec_").is_some_and(is_canonical_base64);
                    if !valid {
                        return Err(ConfigError::invalid(
                            format!("{prefix}.secret"),
                            "must be `whsec_` followed by the base64 of the key",
                        ));
                    }
                }
                for (field, value) in [("app_id", &self.app_id), ("api_base_url", &self.api_base_url)] {
                    if value.is_some() {
                        return Err(ConfigError::invalid(
                            format!("{prefix}.{field}"),
                            "is only used by scheme \"ccpayment\"",
                        ));
                    }
                }
            }
            ProviderScheme::Ccpayment => {
                if self.secret.as_deref() == Some("") {
                    return Err(ConfigError::invalid(format!("{prefix}.secret"), "must not be empty"));
                }
                if self.app_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.app_id"),
                        "is required by scheme \"ccpayment\"",
                    ));
                }
                let url_valid = self.api_base_url.as_deref().is_some_and(|url| {
                    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
                    rest.is_some_and(|rest| {
                        !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace)
                    })
                });
                if !url_valid {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.api_base_url"),
                        "is required by scheme \"ccpayment\" and must start with http:// or https://",
                    ));
                }
                check_range(&format!("{prefix}.fetch_timeout_ms"), self.fetch_timeout_ms, 1, 600_000)?;
                check_range(&format!("{prefix}.fetch_retries"), self.fetch_retries, 0, 10)?;
            }
        }
        check_range(&format!("{prefix}.replay_window_seconds"), self.replay_window_seconds, 1, 86_400)
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .field("app_id", &self.app_id)
            .field("api_base_url", &self.api_base_url)
            .field("replay_window_seconds", &self.replay_window_seconds)
            .field("fetch_timeout_ms", &self.fetch_timeout_ms)
            .field("fetch_retries", &self.fetch_retries)
            .finish()
    }
}

impl JwtConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        match self.algorithm {
            JwtAlgorithm::Hs256 => {
                let Some(variable) = &self.secret_env else {
                    return Err(ConfigError::invalid(format!("{prefix}.secret_env"), "is required by algorithm HS256"));
                };
                if !is_environment_variable_name(variable) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.secret_env"),
                        format!(
                            "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got \"{}\"",
                            variable.escape_debug()
                        ),
                    ));
                }
                if self.public_key_file.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.public_key_file"),
                        "is only used by algorithms RS256 and EdDSA",
                    ));
                }
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa => {
                if self.public_key_file.as_ref().is_none_or(|path| path.as_os_str().is_empty()) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.public_key_file"),
                        "is required by algorithms RS256 and EdDSA",
                    ));
                }
                if self.secret_env.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.secret_env"),
                        "is only used by algorithm HS256",
                    ));
                }
            }
        }
        for (field, value) in [("issuer", &self.issuer), ("audience", &self.audience), ("role_claim", &self.role_claim)]
        {
            if value.is_empty() {
                return Err(ConfigError::invalid(format!("{prefix}.{field}"), "must not be empty"));
            }
        }
        Ok(())
    }
}

impl TokenConfig {
    /// The token's name: `name`, or `token-{index}` (its place in `[[auth.tokens]]`) when
    /// absent.
    pub fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("token-{index}"))
    }

    /// The token's SHA-256 as bytes. Meaningful on a validated config, where `sha256` is 64 hex
    /// digits; otherwise all zeros, which no token hashes to in practice.
    pub fn sha256_bytes(&self) -> [u8; 32] {
        let mut digest = [0_u8; 32];
        if hex::decode_to_slice(&self.sha256, &mut digest).is_err() {
            return [0_u8; 32];
        }
        digest
    }
}

impl RateLimitConfig {
    /// Whether the rate limit is on (`per_token_per_second` > 0).
    pub fn enabled(&self) -> bool {
        self.per_token_per_second > 0
    }

    /// The burst size to use: `burst`, or `per_token_per_second` when `burst` is 0.
    pub fn effective_burst(&self) -> u32 {
        if self.burst == 0 { self.per_token_per_second } else { self.burst }
    }
}

fn check_range<T>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < min || value > max {
        return Err(ConfigError::invalid(key, format!("must be between {min} and {max}, got {value}")));
    }
    Ok(())
}

/// A name of a token or JWT issuer: 1 to 64 characters of `A-Z a-z 0-9 _ - .`.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be 1 to 64 characters of A-Z a-z 0-9 _ - ., got \"{}\"", name.escape_debug()),
        ))
    }
}

/// Whether `text` is a web origin: `http://` or `https://`, a host of letters, digits, `-`
/// and `.`, and an optional port; nothing else.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let host_valid =
        !host.is_empty() && host.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'));
    let port_valid = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    host_valid && port_valid
}

fn is_environment_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Whether `text` is non-empty canonical standard base64 (padded, unused bits zero): what a
/// strict decoder accepts.
fn is_canonical_base64(text: &str) -> bool {
    use base64::Engine as _;
    !text.is_empty() && base64::engine::general_purpose::STANDARD.decode(text).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    /// Parses `text` and returns the key of the error, failing if it parses.
    fn rejected_key(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
            Err(error) => error.key().unwrap_or("<none>").to_owned(),
        }
    }

    const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn default_config_parses_and_validates() {
        let config = parse(DEFAULT_CONFIG_TOML).expect("embedded default parses");
        config.validate().expect("embedded default validates");
        assert_eq!(config, default_config());
        assert_eq!(config.server.bind, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(config.server.body_limit_bytes, 4_194_304);
        assert_eq!(config.server.request_timeout_ms, 10_000);
        assert_eq!(config.server.log_format, LogFormat::Text);
        assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(config.storage.snapshot_interval_seconds, 300);
        assert_eq!(config.storage.snapshots_kept, 3);
        assert_eq!(config.storage.wal_retention_snapshots, 0);
        assert_eq!(config.storage.history_cache_bytes, 64 << 20);
        assert_eq!(config.storage.history_checkpoint_interval_ms, 1000);
        assert_eq!(config.limits.amount_max, 1_000_000_000_000_000);
        assert_eq!(config.limits.batch_max, 8190);
        assert_eq!(config.limits.max_in_flight_transfers, 65_536);
        assert_eq!(config.limits.max_in_flight_requests, 16_384);
        assert_eq!(config.limits.history_limit_max, 1000);
        assert_eq!(config.limits.metadata_entries_max, 16);
        assert_eq!(config.limits.metadata_key_chars_max, 64);
        assert_eq!(config.limits.metadata_value_chars_max, 256);
        assert_eq!(config.limits.description_chars_max, 256);
        assert_eq!(config.engine.shards, 1);
        assert_eq!(config.engine.commit_group_records_max, 16_384);
        assert_eq!(config.engine.commit_group_bytes_max, 4_194_304);
        assert_eq!(config.engine.expiry_tick_ms, 100);
        let currencies: Vec<(&str, u32)> =
            config.currencies.iter().map(|currency| (currency.code.as_str(), currency.scale)).collect();
        assert_eq!(currencies, [("USD", 2), ("EUR", 2), ("JPY", 0), ("BTC", 8), ("USDT", 6), ("ETH", 18)]);
        assert!(config.auth.tokens.is_empty());
        assert!(!config.auth_enabled());
        assert_eq!(config.rate_limit.per_token_per_second, 0);
        assert_eq!(config.rate_limit.burst, 0);
        assert!(!config.rate_limit.enabled());
        assert!(config.webhooks.providers.is_empty());
    }

    #[test]
    fn struct_defaults_equal_the_embedded_default() {
        assert_eq!(Config::default(), default_config());
        // An empty file is the default.
        assert_eq!(parse("").unwrap(), default_config());
        // The embedded file names every key: it equals the default written back as TOML.
        let embedded: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let written = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(embedded, written);
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let config =
            parse("[server]\nbind = \"0.0.0.0:9000\"\n\n[limits]\nbatch_max = 10\n\n[engine]\nshards = 8\n").unwrap();
        let defaults = default_config();
        assert_eq!(config.server.bind, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(config.server.body_limit_bytes, defaults.server.body_limit_bytes);
        assert_eq!(config.server.request_timeout_ms, defaults.server.request_timeout_ms);
        assert_eq!(config.limits.batch_max, 10);
        assert_eq!(config.limits.amount_max, defaults.limits.amount_max);
        assert_eq!(config.engine.shards, 8);
        assert_eq!(config.engine.expiry_tick_ms, defaults.engine.expiry_tick_ms);
        assert_eq!(config.storage, defaults.storage);
        assert_eq!(config.currencies, defaults.currencies);
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let error = parse("colour = \"blue\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
        assert_eq!(error.key(), Some("colour"));
        assert_eq!(error.position(), Some(Position { line: 1, column: 1 }));
        let text = error.to_string();
        assert!(text.starts_with("invalid config: unknown key `colour` at line 1, column 1"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let error = parse("[server]\nbind = \"127.0.0.1:1\"\nbnd = \"x\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
        assert_eq!(error.key(), Some("server.bnd"));
        assert_eq!(error.position(), Some(Position { line: 3, column: 1 }));
        let text = error.to_string();
        assert!(text.starts_with("invalid config: unknown key `server.bnd`"), "{text}");
        assert!(text.contains("expected one of"), "toml's message is kept: {text}");

        assert_eq!(rejected_key("[storage]\nfoo = 1\n"), "storage.foo");
        assert_eq!(rejected_key("server = { bind = \"127.0.0.1:1\", x = 1 }"), "server.x");
        assert_eq!(
            rejected_key(&format!(
                "[[webhooks.providers]]\nname = \"a\"\nscheme = \"standard\"\nsecret = \"{STANDARD_SECRET}\"\n\
                 [[webhooks.providers]]\nname = \"b\"\nscheme = \"standard\"\nsecrett = \"x\"\n"
            )),
            "webhooks.providers[1].secrett"
        );
        assert_eq!(rejected_key("[[currencies]]\ncode = \"USD\"\nscale = 2\ndecimals = 2\n"), "currencies[0].decimals");
        assert_eq!(rejected_key("[auth]\ntoken = []\n"), "auth.token");
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        let error = parse("[limits]\nbatch_max = \"many\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::Malformed { .. }), "{error:?}");
        assert_eq!(error.key(), Some("limits.batch_max"));
        assert_eq!(error.position(), Some(Position { line: 2, column: 13 }));
        assert!(error.to_string().starts_with("invalid config: limits.batch_max: invalid type"));

        assert_eq!(rejected_key("[engine]\nshards = -1\n"), "engine.shards");
        assert_eq!(rejected_key("[server]\nbind = \"localhost\"\n"), "server.bind");
        assert_eq!(rejected_key("[server]\nlog_format = \"xml\"\n"), "server.log_format");
        assert_eq!(rejected_key("[limits]\namount_max = 1000\n"), "limits.amount_max");
        assert_eq!(rejected_key("[limits]\namount_max = \"12.5\"\n"), "limits.amount_max");
        assert_eq!(rejected_key("[limits]\namount_max = \"0\"\n"), "limits.amount_max");
        assert_eq!(rejected_key("[limits]\namount_max = \"1000000000000000000000001\"\n"), "limits.amount_max");
        assert_eq!(rejected_key("[[auth.tokens]]\nsha256 = \"00\"\nrole = \"root\"\n"), "auth.tokens[0].role");
        assert_eq!(rejected_key("[[currencies]]\ncode = \"USD\"\n"), "currencies[0].scale");
        let error = parse("[server\nbind = 1\n").unwrap_err();
        assert!(matches!(error, ConfigError::Malformed { .. }), "{error:?}");
        assert_eq!(error.position().map(|position| position.line), Some(1));
    }

    #[test]
    fn amount_max_accepts_leading_zeros_and_the_ceiling() {
        let ceiling = format!("1{}", "0".repeat(24));
        let config = parse(&format!("[limits]\namount_max = \"000{ceiling}\"\n")).unwrap();
        assert_eq!(config.limits.amount_max, AMOUNT_MAX_CEILING);
        assert_eq!(AMOUNT_MAX_CEILING.to_string(), ceiling);
        assert!(parse_amount_max(&format!("{ceiling}1")).is_err());
        assert!(parse_amount_max("99999999999999999999999999999999999").is_err());
        assert!(parse_amount_max("").is_err());
        assert!(parse_amount_max("+5").is_err());
        assert!(parse_amount_max("1e5").is_err());
        assert_eq!(parse_amount_max("42"), Ok(42));
    }

    #[test]
    fn currencies_list_replaces_the_defaults() {
        let config =
            parse("[[currencies]]\ncode = \"GBP\"\nscale = 2\n\n[[currencies]]\ncode = \"XAU\"\nscale = 4\n").unwrap();
        assert_eq!(
            config.currencies,
            vec![
                CurrencyConfig { code: "GBP".to_owned(), scale: 2 },
                CurrencyConfig { code: "XAU".to_owned(), scale: 4 },
            ]
        );
        assert_eq!(config.currency("XAU").map(|currency| currency.scale), Some(4));
        assert!(config.currency("USD").is_none());
        assert!(config.currency("gbp").is_none());
        assert_eq!(default_config().currency("ETH").map(|currency| currency.scale), Some(18));
    }

    #[test]
    fn tokens_and_providers_parse() {
        let digest = "AB".repeat(32);
        let config = parse(&format!(
            "[[auth.tokens]]\nsha256 = \"{digest}\"\nrole = \"admin\"\n\n\
             [[auth.tokens]]\nsha256 = \"{}\"\nrole = \"client\"\n\n\
             [[webhooks.providers]]\nname = \"processor\"\nscheme = \"standard\"\nsecret = \"{STANDARD_SECRET}\"\n\n\
             [[webhooks.providers]]\nname = \"ccpayment\"\nscheme = \"ccpayment\"\napp_id = \"app\"\n\
             secret_env = \"LEDGERD_CCPAYMENT_SECRET\"\napi_base_url = \"https://ccpayment.com\"\nfetch_retries = 5\n",
            "0".repeat(64)
        ))
        .unwrap();
        assert!(config.auth_enabled());
        assert_eq!(config.auth.tokens[0].role, Role::Admin);
        assert_eq!(config.auth.tokens[0].sha256_bytes(), [0xAB; 32]);
        assert_eq!(config.auth.tokens[1].role, Role::Client);
        let standard = &config.webhooks.providers[0];
        assert_eq!(standard.scheme, ProviderScheme::Standard);
        assert_eq!(standard.secret.as_deref(), Some(STANDARD_SECRET));
        assert_eq!(standard.replay_window_seconds, 300);
        assert_eq!(standard.fetch_timeout_ms, 5000);
        assert_eq!(standard.fetch_retries, 2);
        let ccpayment = &config.webhooks.providers[1];
        assert_eq!(ccpayment.scheme, ProviderScheme::Ccpayment);
        assert_eq!(ccpayment.secret_env.as_deref(), Some("LEDGERD_CCPAYMENT_SECRET"));
        assert_eq!(ccpayment.fetch_retries, 5);
        let debug = format!("{standard:?}");
        assert!(!debug.contains("MfKQ9r8"), "Debug hides the secret: {debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn sha256_bytes_of_invalid_hex_is_zero() {
        let token = TokenConfig { name: None, sha256: "xyz".to_owned(), role: Role::Client };
        assert_eq!(token.sha256_bytes(), [0; 32]);
    }

    #[test]
    fn overrides_of_each_type_apply() {
        let mut config = default_config();
        apply_overrides(
            &mut config,
            &overrides(&[
                ("SERVER__BIND", "0.0.0.0:9000"),
                ("server__log_format", "json"),
                ("Storage__Data_Dir", "/var/lib/ledgerd"),
                ("STORAGE__SNAPSHOT_INTERVAL_SECONDS", "60"),
                ("LIMITS__AMOUNT_MAX", "500"),
                ("LIMITS__BATCH_MAX", " 100 "),
                ("ENGINE__SHARDS", "16"),
                ("RATE_LIMIT__PER_TOKEN_PER_SECOND", "50"),
                ("RATE_LIMIT__BURST", "100"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.bind, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(config.server.log_format, LogFormat::Json);
        assert_eq!(config.storage.data_dir, PathBuf::from("/var/lib/ledgerd"));
        assert_eq!(config.storage.snapshot_interval_seconds, 60);
        assert_eq!(config.limits.amount_max, 500);
        assert_eq!(config.limits.batch_max, 100);
        assert_eq!(config.engine.shards, 16);
        assert!(config.rate_limit.enabled());
        assert_eq!(config.rate_limit.effective_burst(), 100);
        // Untouched keys keep their values.
        assert_eq!(config.engine.expiry_tick_ms, 100);
        assert_eq!(config.currencies, default_config().currencies);
    }

    #[test]
    fn overrides_apply_on_top_of_a_file_and_keep_lists() {
        let mut config = parse(&format!(
            "[[currencies]]\ncode = \"GBP\"\nscale = 2\n\n\
             [[webhooks.providers]]\nname = \"processor\"\nscheme = \"standard\"\nsecret = \"{STANDARD_SECRET}\"\n"
        ))
        .unwrap();
        let before = config.clone();
        apply_overrides(&mut config, &overrides(&[("LIMITS__BATCH_MAX", "7")])).unwrap();
        assert_eq!(config.limits.batch_max, 7);
        assert_eq!(config.currencies, before.currencies);
        assert_eq!(config.webhooks, before.webhooks);
        // No overrides: unchanged.
        apply_overrides(&mut config, &[]).unwrap();
        assert_eq!(config.limits.batch_max, 7);
    }

    #[test]
    fn override_value_reads_booleans_and_floats() {
        let flag = toml::Value::Boolean(false);
        assert_eq!(override_value(&flag, "TRUE"), Ok(toml::Value::Boolean(true)));
        assert_eq!(override_value(&flag, "false"), Ok(toml::Value::Boolean(false)));
        assert!(override_value(&flag, "yes").unwrap_err().contains("true or false"));
        let number = toml::Value::Float(0.5);
        assert_eq!(override_value(&number, "1.5"), Ok(toml::Value::Float(1.5)));
        assert!(override_value(&number, "x").is_err());
        let list = toml::Value::Array(Vec::new());
        assert!(override_value(&list, "[]").is_err());
    }

    #[test]
    fn unknown_override_is_rejected_and_named() {
        for name in [
            "SERVER__BINDD",
            "SERVERBIND",
            "NOSUCH__KEY",
            "CURRENCIES__CODE",
            "AUTH__TOKENS",
            "WEBHOOKS__PROVIDERS",
            "SERVER__BIND__X",
        ] {
            let mut config = default_config();
            let error = apply_overrides(&mut config, &overrides(&[(name, "1")])).unwrap_err();
            let variable = format!("LEDGERD_{name}");
            assert_eq!(error, ConfigError::UnknownOverride { variable: variable.clone() });
            assert_eq!(error.key(), Some(variable.as_str()));
            assert!(error.to_string().contains(&format!("unknown key `{variable}`")));
            assert_eq!(config, default_config(), "unchanged on error");
        }
    }

    #[test]
    fn bad_override_value_is_rejected_and_named() {
        let cases = [
            ("LIMITS__BATCH_MAX", "many", "limits.batch_max"),
            ("ENGINE__SHARDS", "-3", "engine.shards"),
            ("SERVER__BIND", "not an address", "server.bind"),
            ("SERVER__LOG_FORMAT", "xml", "server.log_format"),
            ("LIMITS__AMOUNT_MAX", "12.5", "limits.amount_max"),
            ("ENGINE__SHARDS", "0", "engine.shards"),
            ("LIMITS__BATCH_MAX", "100001", "limits.batch_max"),
            ("RATE_LIMIT__BURST", "99999999999", "rate_limit.burst"),
        ];
        for (name, value, key) in cases {
            let mut config = default_config();
            let error = apply_overrides(&mut config, &overrides(&[(name, value)])).unwrap_err();
            let variable = format!("LEDGERD_{name}");
            assert_eq!(error.variable(), Some(variable.as_str()), "{name}={value}: {error}");
            assert_eq!(error.key(), Some(key), "{name}={value}: {error}");
            assert!(error.to_string().starts_with(&format!("invalid config: {variable} ({key}): ")), "{error}");
            assert_eq!(config, default_config(), "unchanged on error");
        }
        // A rule broken by two overrides together names the key it is checked on.
        let mut config = default_config();
        let error = apply_overrides(
            &mut config,
            &overrides(&[("RATE_LIMIT__PER_TOKEN_PER_SECOND", "10"), ("RATE_LIMIT__BURST", "5")]),
        )
        .unwrap_err();
        assert_eq!(error.key(), Some("rate_limit.burst"));
        assert_eq!(error.variable(), Some("LEDGERD_RATE_LIMIT__BURST"));
    }

    #[test]
    fn validation_error_after_overrides_names_the_right_variable() {
        let mut config = default_config();
        let error = apply_overrides(&mut config, &overrides(&[("LIMITS__BATCH_MAX", "0"), ("ENGINE__SHARDS", "8")]))
            .unwrap_err();
        assert_eq!(error.variable(), Some("LEDGERD_LIMITS__BATCH_MAX"));
        // The same key twice: the later spelling is the one blamed (and the one applied).
        let error = apply_overrides(&mut config, &overrides(&[("limits__batch_max", "5"), ("LIMITS__BATCH_MAX", "0")]))
            .unwrap_err();
        assert_eq!(error.variable(), Some("LEDGERD_LIMITS__BATCH_MAX"));
        apply_overrides(&mut config, &overrides(&[("limits__batch_max", "0"), ("LIMITS__BATCH_MAX", "5")])).unwrap();
        assert_eq!(config.limits.batch_max, 5);
        // A rule broken by a key no override touched is reported as a plain validation error.
        let mut config = default_config();
        config.engine.shards = 0;
        let error = apply_overrides(&mut config, &overrides(&[("LIMITS__BATCH_MAX", "5")])).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { .. }), "{error:?}");
        assert_eq!(error.key(), Some("engine.shards"));
    }

    #[test]
    fn each_validation_rule_names_its_key() {
        let provider = |body: &str| format!("[[webhooks.providers]]\n{body}\n");
        let standard = |extra: &str| provider(&format!("name = \"p\"\nscheme = \"standard\"\n{extra}"));
        let ccpayment = |extra: &str| provider(&format!("name = \"c\"\nscheme = \"ccpayment\"\n{extra}"));
        let cc_complete = "app_id = \"a\"\nsecret_env = \"S\"\napi_base_url = \"https://x.example\"\n";
        let token = |digest: &str| format!("[[auth.tokens]]\nsha256 = \"{digest}\"\nrole = \"client\"\n");
        let cases: Vec<(String, &str)> = vec![
            ("[server]\nbody_limit_bytes = 0".into(), "server.body_limit_bytes"),
            ("[server]\nbody_limit_bytes = 1073741825".into(), "server.body_limit_bytes"),
            ("[server]\nrequest_timeout_ms = 0".into(), "server.request_timeout_ms"),
            ("[storage]\ndata_dir = \"\"".into(), "storage.data_dir"),
            ("[storage]\nsnapshot_interval_seconds = 31536001".into(), "storage.snapshot_interval_seconds"),
            ("[storage]\nsnapshots_kept = 0".into(), "storage.snapshots_kept"),
            ("[storage]\nwal_retention_snapshots = 4".into(), "storage.wal_retention_snapshots"),
            ("[storage]\nhistory_cache_bytes = 1000".into(), "storage.history_cache_bytes"),
            ("[storage]\nhistory_checkpoint_interval_ms = 5".into(), "storage.history_checkpoint_interval_ms"),
            ("[limits]\nbatch_max = 0".into(), "limits.batch_max"),
            ("[limits]\nbatch_max = 100001".into(), "limits.batch_max"),
            ("[limits]\nmax_in_flight_transfers = 0".into(), "limits.max_in_flight_transfers"),
            ("[limits]\nmax_in_flight_requests = 0".into(), "limits.max_in_flight_requests"),
            ("[limits]\nhistory_limit_max = 0".into(), "limits.history_limit_max"),
            ("[limits]\nmetadata_entries_max = 1025".into(), "limits.metadata_entries_max"),
            ("[limits]\nmetadata_key_chars_max = 0".into(), "limits.metadata_key_chars_max"),
            ("[limits]\nmetadata_value_chars_max = 0".into(), "limits.metadata_value_chars_max"),
            ("[limits]\ndescription_chars_max = 0".into(), "limits.description_chars_max"),
            ("[engine]\nshards = 0".into(), "engine.shards"),
            ("[engine]\nshards = 257".into(), "engine.shards"),
            ("[engine]\ncommit_group_records_max = 0".into(), "engine.commit_group_records_max"),
            ("[engine]\ncommit_group_bytes_max = 0".into(), "engine.commit_group_bytes_max"),
            ("[engine]\nexpiry_tick_ms = 0".into(), "engine.expiry_tick_ms"),
            ("[engine]\nexpiry_tick_ms = 1001".into(), "engine.expiry_tick_ms"),
            ("currencies = []".into(), "currencies"),
            ("[[currencies]]\ncode = \"\"\nscale = 2".into(), "currencies[0].code"),
            ("[[currencies]]\ncode = \"US-D\"\nscale = 2".into(), "currencies[0].code"),
            ("[[currencies]]\ncode = \"ABCDEFGHIJKLM\"\nscale = 2".into(), "currencies[0].code"),
            (
                "[[currencies]]\ncode = \"USD\"\nscale = 2\n[[currencies]]\ncode = \"usd\"\nscale = 2".into(),
                "currencies[1].code",
            ),
            ("[[currencies]]\ncode = \"USD\"\nscale = 19".into(), "currencies[0].scale"),
            (token(&"a".repeat(63)), "auth.tokens[0].sha256"),
            (token(&"g".repeat(64)), "auth.tokens[0].sha256"),
            (format!("{}{}", token(&"ab".repeat(32)), token(&"AB".repeat(32))), "auth.tokens[1].sha256"),
            ("[rate_limit]\nper_token_per_second = 10\nburst = 9".into(), "rate_limit.burst"),
            (standard(&format!("secret = \"{STANDARD_SECRET}\"\nname2 = 1")), "webhooks.providers[0].name2"),
            (standard(""), "webhooks.providers[0].secret"),
            (standard(&format!("secret = \"{STANDARD_SECRET}\"\nsecret_env = \"S\"")), "webhooks.providers[0].secret"),
            (standard("secret = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""), "webhooks.providers[0].secret"),
            (standard("secret = \"whsec_not base64!\""), "webhooks.providers[0].secret"),
            (standard("secret = \"whsec_\""), "webhooks.providers[0].secret"),
            (standard("secret_env = \"1BAD\""), "webhooks.providers[0].secret_env"),
            (standard("secret_env = \"S\"\napp_id = \"a\""), "webhooks.providers[0].app_id"),
            (standard("secret_env = \"S\"\nreplay_window_seconds = 0"), "webhooks.providers[0].replay_window_seconds"),
            (
                standard("secret_env = \"S\"\nreplay_window_seconds = 86401"),
                "webhooks.providers[0].replay_window_seconds",
            ),
            (provider("name = \"bad name\"\nscheme = \"standard\"\nsecret_env = \"S\""), "webhooks.providers[0].name"),
            (
                provider(&format!("name = \"{}\"\nscheme = \"standard\"\nsecret_env = \"S\"", "n".repeat(65))),
                "webhooks.providers[0].name",
            ),
            (
                format!("{}{}", standard("secret_env = \"S\""), standard("secret_env = \"T\"")),
                "webhooks.providers[1].name",
            ),
            (ccpayment("secret_env = \"S\"\napi_base_url = \"https://x.example\""), "webhooks.providers[0].app_id"),
            (ccpayment("app_id = \"a\"\napi_base_url = \"https://x.example\""), "webhooks.providers[0].secret"),
            (
                ccpayment("app_id = \"a\"\nsecret = \"\"\napi_base_url = \"https://x.example\""),
                "webhooks.providers[0].secret",
            ),
            (ccpayment("app_id = \"a\"\nsecret_env = \"S\""), "webhooks.providers[0].api_base_url"),
            (
                ccpayment("app_id = \"a\"\nsecret_env = \"S\"\napi_base_url = \"ftp://x.example\""),
                "webhooks.providers[0].api_base_url",
            ),
            (
                ccpayment("app_id = \"a\"\nsecret_env = \"S\"\napi_base_url = \"https://\""),
                "webhooks.providers[0].api_base_url",
            ),
            (ccpayment(&format!("{cc_complete}fetch_timeout_ms = 0")), "webhooks.providers[0].fetch_timeout_ms"),
            (ccpayment(&format!("{cc_complete}fetch_retries = 11")), "webhooks.providers[0].fetch_retries"),
        ];
        for (text, key) in &cases {
            let error = match parse(text) {
                Ok(_) => panic!("accepted, expected {key} to be rejected:\n{text}"),
                Err(error) => error,
            };
            assert_eq!(error.key(), Some(*key), "{text}\n=> {error}");
            assert!(error.to_string().contains(key), "{error}");
            assert!(!error.to_string().contains('\n'), "one line: {error}");
        }
        // The rules accept their boundaries.
        let accepted = [
            "[server]\nbody_limit_bytes = 1073741824".to_owned(),
            "[storage]\nsnapshot_interval_seconds = 0\nsnapshots_kept = 1\nwal_retention_snapshots = 1".to_owned(),
            "[limits]\nbatch_max = 100000\namount_max = \"1\"".to_owned(),
            "[engine]\nshards = 256\nexpiry_tick_ms = 1000".to_owned(),
            "[engine]\nshards = 1\nexpiry_tick_ms = 1".to_owned(),
            "[[currencies]]\ncode = \"ABCDEFGHIJ12\"\nscale = 18".to_owned(),
            "[rate_limit]\nper_token_per_second = 10\nburst = 0".to_owned(),
            "[rate_limit]\nper_token_per_second = 10\nburst = 10".to_owned(),
            standard("secret = \"whsec_YWJj\""),
            standard("secret = \"whsec_YWI=\""),
            standard("secret = \"whsec_YQ==\"\nreplay_window_seconds = 86400"),
            ccpayment("app_id = \"a\"\nsecret = \"s\"\napi_base_url = \"http://127.0.0.1:9999\""),
            provider(&format!("name = \"{}\"\nscheme = \"standard\"\nsecret_env = \"_S1\"", "N_-9".repeat(16))),
        ];
        for text in &accepted {
            if let Err(error) = parse(text) {
                panic!("rejected:\n{text}\n=> {error}");
            }
        }
    }

    #[test]
    fn validation_error_display_names_the_key() {
        let error = parse("[limits]\nbatch_max = 0\n").unwrap_err();
        assert_eq!(error.to_string(), "invalid config: limits.batch_max: must be between 1 and 100000, got 0");
        assert_eq!(error.key(), Some("limits.batch_max"));
        assert_eq!(error.variable(), None);
    }

    #[test]
    fn validate_checks_amount_max_set_in_code() {
        let mut config = default_config();
        config.limits.amount_max = AMOUNT_MAX_CEILING + 1;
        assert_eq!(config.validate().unwrap_err().key(), Some("limits.amount_max"));
        config.limits.amount_max = 0;
        assert_eq!(config.validate().unwrap_err().key(), Some("limits.amount_max"));
    }

    #[test]
    fn canonical_base64() {
        assert!(is_canonical_base64("YWJj"));
        assert!(is_canonical_base64("YWI="));
        assert!(is_canonical_base64("YQ=="));
        assert!(!is_canonical_base64(""));
        assert!(!is_canonical_base64("YWJ"));
        assert!(!is_canonical_base64("YR=="), "non-zero unused bits");
        assert!(!is_canonical_base64("YWJ="), "non-zero unused bits");
        assert!(!is_canonical_base64("Y==="));
        assert!(!is_canonical_base64("YW=j"));
        assert!(!is_canonical_base64("YW_j"));
    }

    #[test]
    fn error_positions_are_one_based() {
        assert_eq!(position_of("", 0), Position { line: 1, column: 1 });
        assert_eq!(position_of("ab\ncd", 4), Position { line: 2, column: 2 });
        assert_eq!(position_of("é\nx", 1), Position { line: 1, column: 1 });
        assert_eq!(position_of("ab", 99), Position { line: 1, column: 3 });
    }

    #[test]
    fn hardening_keys_have_their_defaults() {
        let config = default_config();
        let server = &config.server;
        assert_eq!(server.connections_max, 10_000);
        assert_eq!(server.header_timeout_ms, 10_000);
        assert_eq!(server.idle_timeout_ms, 60_000);
        assert_eq!((server.tls_cert_file.as_ref(), server.tls_key_file.as_ref()), (None, None));
        assert!(!server.plaintext && !server.read_only && !config.tls_enabled());
        assert!(server.cors_allowed_origins.is_empty());
        assert_eq!(server.audit_log, None);
        assert_eq!(config.auth.failures_per_minute, 60);
        assert!(config.auth.jwt.is_empty());
    }

    #[test]
    fn hardening_keys_parse() {
        let config = parse(
            "[server]\nconnections_max = 5\nheader_timeout_ms = 100\nidle_timeout_ms = 200\n\
             tls_cert_file = \"/etc/cert.pem\"\ntls_key_file = \"/etc/key.pem\"\nplaintext = true\n\
             cors_allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]\n\
             audit_log = \"/var/log/ledgerd-audit.jsonl\"\nread_only = true\n\
             [auth]\nfailures_per_minute = 3\n\
             [[auth.tokens]]\nname = \"checkout\"\nsha256 = \"{}\"\nrole = \"client\"\n\
             [[auth.jwt]]\nname = \"idp\"\nalgorithm = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n\
             issuer = \"https://idp\"\naudience = \"ledgerd\"\n\
             [[auth.jwt]]\nname = \"idp2\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"/etc/idp.pem\"\n\
             issuer = \"i\"\naudience = \"a\"\nrole_claim = \"ledger_role\"\n"
                .replace("{}", &"ab".repeat(32))
                .as_str(),
        )
        .unwrap();
        let server = &config.server;
        assert_eq!((server.connections_max, server.header_timeout_ms, server.idle_timeout_ms), (5, 100, 200));
        assert_eq!(server.tls_cert_file, Some(PathBuf::from("/etc/cert.pem")));
        assert!(config.tls_enabled() && server.plaintext && server.read_only);
        assert_eq!(server.cors_allowed_origins.len(), 2);
        assert_eq!(server.audit_log, Some(PathBuf::from("/var/log/ledgerd-audit.jsonl")));
        assert_eq!(config.auth.failures_per_minute, 3);
        assert_eq!(config.auth.tokens[0].display_name(0), "checkout");
        let jwt = &config.auth.jwt;
        assert_eq!((jwt[0].algorithm, jwt[0].role_claim.as_str()), (JwtAlgorithm::Hs256, "role"));
        assert_eq!((jwt[1].algorithm, jwt[1].role_claim.as_str()), (JwtAlgorithm::EdDsa, "ledger_role"));
        assert!(config.auth_enabled());
        // A JWT issuer alone turns auth on.
        let jwt_only = parse(
            "[[auth.jwt]]\nname = \"idp\"\nalgorithm = \"RS256\"\npublic_key_file = \"/k.pem\"\n\
             issuer = \"i\"\naudience = \"a\"\n",
        )
        .unwrap();
        assert!(jwt_only.auth_enabled());
        // A token without a name is named by its place.
        let unnamed = parse(&format!("[[auth.tokens]]\nsha256 = \"{}\"\nrole = \"admin\"\n", "cd".repeat(32))).unwrap();
        assert_eq!(unnamed.auth.tokens[0].display_name(0), "token-0");
    }

    #[test]
    fn hardening_keys_are_validated_and_named() {
        let hash = "ab".repeat(32);
        let jwt = |body: &str| format!("[[auth.jwt]]\nname = \"idp\"\nissuer = \"i\"\naudience = \"a\"\n{body}");
        let cases = [
            ("[server]\nconnections_max = 0\n".to_owned(), "server.connections_max"),
            ("[server]\nheader_timeout_ms = 0\n".to_owned(), "server.header_timeout_ms"),
            ("[server]\nidle_timeout_ms = 0\n".to_owned(), "server.idle_timeout_ms"),
            ("[server]\ntls_cert_file = \"/c.pem\"\n".to_owned(), "server.tls_key_file"),
            ("[server]\ntls_key_file = \"/k.pem\"\n".to_owned(), "server.tls_cert_file"),
            ("[server]\ncors_allowed_origins = [\"app.example.com\"]\n".to_owned(), "server.cors_allowed_origins[0]"),
            (
                "[server]\ncors_allowed_origins = [\"https://a.example\", \"https://a.example/path\"]\n".to_owned(),
                "server.cors_allowed_origins[1]",
            ),
            ("[server]\nplaintext = \"yes\"\n".to_owned(), "server.plaintext"),
            ("[server]\nread_onlyy = true\n".to_owned(), "server.read_onlyy"),
            ("[auth]\nfailures_per_minute = 0\n".to_owned(), "auth.failures_per_minute"),
            (
                format!("[[auth.tokens]]\nname = \"a b\"\nsha256 = \"{hash}\"\nrole = \"admin\"\n"),
                "auth.tokens[0].name",
            ),
            (
                format!(
                    "[[auth.tokens]]\nname = \"x\"\nsha256 = \"{hash}\"\nrole = \"admin\"\n\
                     [[auth.tokens]]\nname = \"x\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
                    "cd".repeat(32)
                ),
                "auth.tokens[1].name",
            ),
            (jwt("algorithm = \"HS256\"\n"), "auth.jwt[0].secret_env"),
            (jwt("algorithm = \"HS256\"\nsecret_env = \"1BAD\"\n"), "auth.jwt[0].secret_env"),
            (jwt("algorithm = \"RS256\"\n"), "auth.jwt[0].public_key_file"),
            (jwt("algorithm = \"EdDSA\"\npublic_key_file = \"/k\"\nsecret_env = \"S\"\n"), "auth.jwt[0].secret_env"),
            (jwt("algorithm = \"none\"\n"), "auth.jwt[0].algorithm"),
            (jwt("algorithm = \"HS256\"\nsecret_env = \"S\"\nrole_claim = \"\"\n"), "auth.jwt[0].role_claim"),
            (jwt("algorithm = \"HS256\"\nsecret_env = \"S\"\nextra = 1\n"), "auth.jwt[0].extra"),
        ];
        for (text, key) in cases {
            assert_eq!(rejected_key(&text), key, "{text}");
        }
    }

    #[test]
    fn hardening_keys_take_environment_overrides() {
        let mut config = default_config();
        apply_overrides(
            &mut config,
            &overrides(&[
                ("SERVER__READ_ONLY", "true"),
                ("SERVER__CONNECTIONS_MAX", "42"),
                ("SERVER__AUDIT_LOG", "/tmp/audit.jsonl"),
                ("SERVER__PLAINTEXT", "TRUE"),
                ("AUTH__FAILURES_PER_MINUTE", "7"),
            ]),
        )
        .unwrap();
        assert!(config.server.read_only && config.server.plaintext);
        assert_eq!(config.server.connections_max, 42);
        assert_eq!(config.server.audit_log, Some(PathBuf::from("/tmp/audit.jsonl")));
        assert_eq!(config.auth.failures_per_minute, 7);
        let error = apply_overrides(&mut config, &overrides(&[("SERVER__READ_ONLY", "maybe")])).unwrap_err();
        assert_eq!(error.variable(), Some("LEDGERD_SERVER__READ_ONLY"));
        let error = apply_overrides(&mut config, &overrides(&[("SERVER__CORS_ALLOWED_ORIGINS", "x")])).unwrap_err();
        assert_eq!(error.variable(), Some("LEDGERD_SERVER__CORS_ALLOWED_ORIGINS"), "{error}");
        let error = apply_overrides(&mut config, &overrides(&[("AUTH__FAILURES_PER_MINUTE", "0")])).unwrap_err();
        assert_eq!(error.key(), Some("auth.failures_per_minute"), "{error}");
    }
}
