//! Who is calling, and what they may do.
//!
//! This module owns bearer-token authentication of the `/v1` routes and the per-caller rate
//! limit. The config stores only the SHA-256 of each token: a presented token is hashed and
//! compared with every configured digest in constant time (`subtle`). With no tokens
//! configured, auth is off and every caller acts as `admin`. The [`guard`] middleware puts the
//! caller's [`Identity`] in the request extensions for handlers that check roles
//! ([`Identity::require_admin`]) and applies the rate limit (per token, or per client address
//! when auth is off).
//!
//! Tokens and `Authorization` headers are never logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use config::{Config, Role};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// The configured tokens (their SHA-256 digests and roles).
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<[([u8; 32], Role)]>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The rate-limit bucket of the caller.
    pub key: CallerKey,
}

/// What the rate limit counts per: a token (by its digest) or, with auth off, an address.
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
}

impl Authenticator {
    pub fn new(config: &Config) -> Authenticator {
        let tokens: Vec<([u8; 32], Role)> =
            config.auth.tokens.iter().map(|token| (token.sha256_bytes(), token.role)).collect();
        Authenticator { tokens: tokens.into() }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller of a request with these headers, from this address.
    pub fn authenticate(&self, headers: &HeaderMap, address: IpAddr) -> Result<Identity, ApiError> {
        if !self.enabled() {
            return Ok(Identity { role: Role::Admin, key: CallerKey::Address(address) });
        }
        let token = bearer_token(headers).ok_or_else(ApiError::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every configured digest, in constant time each, without stopping early.
        let mut found: Option<Role> = None;
        for (configured, role) in self.tokens.iter() {
            if bool::from(configured.ct_eq(&digest)) {
                found = Some(*role);
            }
        }
        let role = found.ok_or_else(ApiError::unauthorized)?;
        Ok(Identity { role, key: CallerKey::Token(digest) })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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

/// How often idle rate-limit buckets are forgotten.
pub const RATE_LIMIT_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Middleware of the `/v1` routes: authenticates (401), then rate-limits (429).
pub async fn guard(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let identity = match state.authenticator.authenticate(request.headers(), address) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    if let Some(limiter) = &state.rate_limiter
        && let Err(seconds) = limiter.check(&identity.key)
    {
        return ApiError::rate_limited(seconds).into_response();
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
}
