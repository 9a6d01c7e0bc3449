//! Who is calling, and what they may do.
//!
//! This module owns authentication of the `/v1` routes: static bearer tokens (the config
//! stores only their SHA-256; a presented token is hashed and compared with every configured
//! digest in constant time, `subtle`) and JWT bearer tokens of the configured issuers
//! (`jsonwebtoken`: the header's `alg` must be the issuer's algorithm, `iss`, `aud` and `exp`
//! are required, `nbf` honoured, 60 s leeway, the role read from the issuer's role claim). With
//! neither configured, auth is off and every caller acts as `admin`. It also owns the limit on
//! failed authentications per client address ([`FailureLimiter`]) and the per-caller rate
//! limit. The [`guard`] middleware puts the caller's [`Identity`] (role, name, rate-limit
//! bucket) in the request extensions for handlers that check roles.
//!
//! Tokens, secrets and `Authorization` headers are never logged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use config::{Config, JwtAlgorithm, JwtConfig, Role};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// Leeway of a JWT's `exp` and `nbf`, in seconds.
pub const JWT_LEEWAY_SECONDS: u64 = 60;

/// Shortest HS256 secret, in bytes (256 bits).
pub const HS256_SECRET_BYTES_MIN: usize = 32;

/// One configured static token.
struct StaticToken {
    digest: [u8; 32],
    role: Role,
    name: Arc<str>,
}

/// One configured JWT issuer, its key loaded.
struct JwtIssuer {
    name: Arc<str>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
}

/// The configured tokens and JWT issuers.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<[StaticToken]>,
    issuers: Arc<[JwtIssuer]>,
    /// Whether the config turns auth on (whatever could be loaded: an issuer whose key failed
    /// to load never turns auth off).
    enabled: bool,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// Who: the token's `name` or the JWT's `sub`; `None` with auth off.
    pub who: Option<Arc<str>>,
    /// The rate-limit bucket of the caller.
    pub key: CallerKey,
}

/// What the rate limit counts per: a token or JWT subject (by digest) or, with auth off, an
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKey {
    Token([u8; 32]),
    Address(IpAddr),
}

impl Identity {
    /// Refuses callers without the `admin` role: 403 `forbidden`.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin { Ok(()) } else { Err(ApiError::forbidden()) }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why the authenticator could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.jwt[{index}] ({name}): environment variable {variable} is not set")]
    MissingSecret { index: usize, name: String, variable: String },
    #[error("auth.jwt[{index}] ({name}): the HS256 secret in {variable} has {bytes} bytes; at least 32 are required")]
    ShortSecret { index: usize, name: String, variable: String, bytes: usize },
    #[error("auth.jwt[{index}] ({name}): cannot read the public key {path}: {reason}")]
    PublicKey { index: usize, name: String, path: String, reason: String },
}

impl Authenticator {
    /// The tokens and JWT issuers of `config`; `lookup` reads the environment (HS256 secrets),
    /// public keys are read from their files.
    pub fn from_config(
        config: &Config,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Authenticator, AuthSetupError> {
        let issuers = config
            .auth
            .jwt
            .iter()
            .enumerate()
            .map(|(index, entry)| JwtIssuer::load(index, entry, &lookup))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Authenticator { tokens: static_tokens(config), issuers: issuers.into(), enabled: config.auth_enabled() })
    }

    /// [`Authenticator::from_config`] with the process environment (tests and tools). An
    /// issuer whose key cannot be loaded is left out, logged: its tokens are refused.
    pub fn new(config: &Config) -> Authenticator {
        let environment = config::process_environment();
        let lookup = |name: &str| environment.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        Authenticator::from_config(config, lookup).unwrap_or_else(|error| {
            tracing::error!(%error, "a JWT issuer could not be loaded; its tokens are refused");
            Authenticator { tokens: static_tokens(config), issuers: Vec::new().into(), enabled: config.auth_enabled() }
        })
    }

    /// Whether any token or JWT issuer is configured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller of a request with these headers, from this address.
    pub fn authenticate(&self, headers: &HeaderMap, address: IpAddr) -> Result<Identity, ApiError> {
        if !self.enabled() {
            return Ok(Identity { role: Role::Admin, who: None, key: CallerKey::Address(address) });
        }
        let token = bearer_token(headers).ok_or_else(ApiError::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every configured digest, in constant time each, without stopping early.
        let mut found: Option<&StaticToken> = None;
        for configured in self.tokens.iter() {
            if bool::from(configured.digest.ct_eq(&digest)) {
                found = Some(configured);
            }
        }
        if let Some(configured) = found {
            return Ok(Identity {
                role: configured.role,
                who: Some(configured.name.clone()),
                key: CallerKey::Token(digest),
            });
        }
        self.authenticate_jwt(token).ok_or_else(ApiError::unauthorized)
    }

    /// The caller of a JWT bearer token, when an issuer accepts it.
    fn authenticate_jwt(&self, token: &str) -> Option<Identity> {
        if self.issuers.is_empty() {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        self.issuers.iter().filter(|issuer| issuer.algorithm == header.alg).find_map(|issuer| issuer.accept(token))
    }
}

fn static_tokens(config: &Config) -> Arc<[StaticToken]> {
    config
        .auth
        .tokens
        .iter()
        .enumerate()
        .map(|(index, token)| StaticToken {
            digest: token.sha256_bytes(),
            role: token.role,
            name: token.display_name(index).into(),
        })
        .collect()
}

impl JwtIssuer {
    fn load(
        index: usize,
        entry: &JwtConfig,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<JwtIssuer, AuthSetupError> {
        let name = entry.name.clone();
        let (algorithm, key) = match entry.algorithm {
            JwtAlgorithm::Hs256 => {
                let variable = entry.secret_env.clone().unwrap_or_default();
                let secret = lookup(&variable).ok_or_else(|| AuthSetupError::MissingSecret {
                    index,
                    name: name.clone(),
                    variable: variable.clone(),
                })?;
                if secret.len() < HS256_SECRET_BYTES_MIN {
                    return Err(AuthSetupError::ShortSecret { index, name, variable, bytes: secret.len() });
                }
                (Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()))
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa => {
                let path = entry.public_key_file.clone().unwrap_or_default();
                let failure = |reason: String| AuthSetupError::PublicKey {
                    index,
                    name: name.clone(),
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(&path).map_err(|error| failure(error.to_string()))?;
                if entry.algorithm == JwtAlgorithm::Rs256 {
                    (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem).map_err(|error| failure(error.to_string()))?)
                } else {
                    (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem).map_err(|error| failure(error.to_string()))?)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = JWT_LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[entry.issuer.as_str()]);
        validation.set_audience(&[entry.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(JwtIssuer { name: name.into(), algorithm, key, validation, role_claim: entry.role_claim.clone() })
    }

    /// The caller of `token` when this issuer signed it and its claims hold.
    fn accept(&self, token: &str) -> Option<Identity> {
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation).ok()?;
        let claims = data.claims;
        let role = match claims.get(&self.role_claim).and_then(serde_json::Value::as_str) {
            Some("client") => Role::Client,
            Some("admin") => Role::Admin,
            _ => return None,
        };
        let subject = claims.get("sub").and_then(serde_json::Value::as_str).map(Arc::<str>::from);
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update([0]);
        hasher.update(subject.as_deref().unwrap_or_default().as_bytes());
        Some(Identity { role, who: subject, key: CallerKey::Token(hasher.finalize().into()) })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Most client addresses whose failures are remembered at once; beyond it the oldest windows
/// are forgotten first.
const FAILURE_ADDRESSES_MAX: usize = 100_000;

/// The window failed authentications are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Failed authentications per client address (`auth.failures_per_minute`): once an address
/// has failed that many times within a minute of its first failure, every `/v1` request from
/// it is refused until that minute has passed.
pub struct FailureLimiter {
    failures_max: u32,
    /// Per address: when its window started and how many failures it holds.
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(failures_per_minute: u32) -> FailureLimiter {
        FailureLimiter { failures_max: failures_per_minute.max(1), windows: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(seconds until the window ends)` when `address` is blocked now.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), u64> {
        let windows = self.lock();
        match windows.get(&address) {
            Some((started, count)) if *count >= self.failures_max && now < *started + FAILURE_WINDOW => {
                let left = (*started + FAILURE_WINDOW).saturating_duration_since(now);
                Err(left.as_secs().saturating_add(u64::from(left.subsec_nanos() > 0)).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication of `address`.
    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= FAILURE_ADDRESSES_MAX && !windows.contains_key(&address) {
            windows.retain(|_, (started, _)| now < *started + FAILURE_WINDOW);
            if windows.len() >= FAILURE_ADDRESSES_MAX
                && let Some(oldest) = windows.iter().min_by_key(|(_, (started, _))| *started).map(|(key, _)| *key)
            {
                windows.remove(&oldest);
            }
        }
        let window = windows.entry(address).or_insert((now, 0));
        if now >= window.0 + FAILURE_WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
    }

    /// Forgets windows that are over (bounds memory).
    pub fn forget_expired(&self, now: Instant) {
        self.lock().retain(|_, (started, _)| now < *started + FAILURE_WINDOW);
    }
}

/// The per-caller rate limit (`[rate_limit]`), when on.
pub struct CallerRateLimiter {
    limiter: DefaultKeyedRateLimiter<CallerKey>,
}

impl CallerRateLimiter {
    /// The limiter the config asks for, or `None` when the rate limit is off.
    pub fn from_config(config: &Config) -> Option<CallerRateLimiter> {
        let per_second = NonZeroU32::new(config.rate_limit.per_token_per_second)?;
        let burst = NonZeroU32::new(config.rate_limit.effective_burst()).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(CallerRateLimiter { limiter: RateLimiter::dashmap(quota) })
    }

    /// Counts one request of `key`: `Err(seconds to wait)` when over the limit.
    pub fn check(&self, key: &CallerKey) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forgets callers that are back to a full bucket (bounds memory with many addresses).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// How often idle rate-limit buckets and finished failure windows are forgotten.
pub const RATE_LIMIT_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// The client address of a request (unspecified when the connection's is not known).
pub fn client_address(request: &Request) -> IpAddr {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// Middleware of the `/v1` routes: refuses addresses with too many failed authentications
/// (429), authenticates (401), then rate-limits (429).
pub async fn guard(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let address = client_address(&request);
    let now = Instant::now();
    if state.authenticator.enabled()
        && let Err(seconds) = state.failure_limiter.check(address, now)
    {
        metrics::counter!(crate::http::metrics::AUTH_BLOCKED_TOTAL).increment(1);
        return ApiError::rate_limited(seconds).into_response();
    }
    let identity = match state.authenticator.authenticate(request.headers(), address) {
        Ok(identity) => identity,
        Err(error) => {
            state.failure_limiter.record_failure(address, now);
            metrics::counter!(crate::http::metrics::AUTH_FAILURES_TOTAL).increment(1);
            return error.into_response();
        }
    };
    if let Some(limiter) = &state.rate_limiter
        && let Err(seconds) = limiter.check(&identity.key)
    {
        return ApiError::rate_limited(seconds).into_response();
    }
    if let Some(caller) = request.extensions().get::<crate::http::audit_log::AuditCaller>() {
        caller.set(identity.who.clone(), identity.role);
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn failures_block_an_address_for_the_rest_of_its_minute_only() {
        let limiter = FailureLimiter::new(3);
        let start = Instant::now();
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            limiter.record_failure(guesser, start);
        }
        assert_eq!(limiter.check(guesser, start), Ok(()));
        limiter.record_failure(guesser, start + Duration::from_secs(10));
        assert_eq!(limiter.check(guesser, start + Duration::from_secs(10)), Err(50));
        assert_eq!(limiter.check(other, start + Duration::from_secs(10)), Ok(()));
        assert_eq!(limiter.check(guesser, start + Duration::from_secs(60)), Ok(()));
        limiter.forget_expired(start + Duration::from_secs(61));
        assert!(limiter.lock().is_empty());
    }
}
