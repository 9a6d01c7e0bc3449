//! Webhook signatures: checking what providers send and signing what the ledger sends them.
//!
//! This module owns the two signature schemes of the contract (API.md §5), as pure functions
//! over raw bytes, with the time passed in:
//!
//! - **Standard Webhooks 1.0**: headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature` (space-separated `v1,<base64>`; any one valid suffices); the signed
//!   content is `id + "." + timestamp + "." + body`, HMAC-SHA256 keyed with the base64-decoded
//!   secret after its `whsec_` prefix.
//! - **CCPayment API v2**: headers `Appid`, `Timestamp` (Unix seconds) and `Sign` (aliases
//!   `X-App-Id`, `X-Timestamp`, `X-Signature`); `Sign` is the lowercase hex of
//!   HMAC-SHA256(app secret, `Appid + Timestamp + body`). The ledger signs its record look-ups
//!   the same way ([`ccpayment_sign`]).
//!
//! Every comparison of a signature is constant-time (`subtle`): the expected MAC is computed
//! and each candidate is compared whole, without stopping at the first differing byte. The
//! signature is checked before the timestamp's age, so that only a genuine delivery learns it
//! is stale; nothing of the body is parsed here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery is refused before its body is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is missing or unreadable.
    #[error("missing or unreadable header `{0}`")]
    MissingHeader(&'static str),
    /// The timestamp header is not a Unix time in seconds.
    #[error("header `{0}` is not a Unix timestamp in seconds")]
    BadTimestamp(&'static str),
    /// The app id is not the configured one.
    #[error("the app id is not the one configured for this provider")]
    WrongAppId,
    /// No signature matches.
    #[error("no valid signature")]
    Mismatch,
    /// Signed correctly, but the timestamp is outside the replay window.
    #[error("the timestamp is {age_seconds} s away from now, outside the replay window of {window_seconds} s")]
    Stale { age_seconds: u64, window_seconds: u64 },
}

impl SignatureError {
    /// Whether the delivery was genuine but too old (or too far in the future).
    pub fn is_stale(&self) -> bool {
        matches!(self, SignatureError::Stale { .. })
    }
}

/// Most `v1,` signatures looked at in one `webhook-signature` header (key rotation sends a
/// few; more is an attempt to make the server work).
pub const STANDARD_SIGNATURES_MAX: usize = 8;

/// Longest header value read for an id, a timestamp or a signature list.
const HEADER_BYTES_MAX: usize = 1024;

/// The HMAC key of a Standard Webhooks secret `whsec_<base64>`; `None` when malformed.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_")?;
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// The `v1,<base64>` signature of a Standard Webhooks message.
pub fn standard_sign(key: &[u8], message_id: &str, timestamp_seconds: i64, body: &[u8]) -> String {
    let mac = standard_mac(key, message_id, &timestamp_seconds.to_string(), body);
    format!("v1,{}", BASE64.encode(mac))
}

fn standard_mac(key: &[u8], message_id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Verifies a Standard Webhooks delivery: its signature over the raw `body`, then its age
/// against `now_seconds` (`window_seconds` either way).
pub fn standard_verify(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_seconds: i64,
    window_seconds: u64,
) -> Result<(), SignatureError> {
    let message_id = header(headers, &["webhook-id"])?;
    let timestamp_text = header(headers, &["webhook-timestamp"])?;
    let signatures = header(headers, &["webhook-signature"])?;
    let timestamp = parse_timestamp(timestamp_text, "webhook-timestamp")?;
    let expected = standard_mac(key, message_id, timestamp_text, body);
    let mut matched = subtle::Choice::from(0);
    for candidate in signatures.split(' ').filter(|part| !part.is_empty()).take(STANDARD_SIGNATURES_MAX) {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(decoded) = BASE64.decode(encoded) else {
            continue;
        };
        // `ct_eq` on slices of different lengths is false (in time independent of the bytes).
        matched |= decoded.as_slice().ct_eq(expected.as_slice());
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    check_age(timestamp, now_seconds, window_seconds)
}

/// The lowercase hex `Sign` of a CCPayment message.
pub fn ccpayment_sign(secret: &[u8], app_id: &str, timestamp_seconds: &str, body: &[u8]) -> String {
    hex::encode(ccpayment_mac(secret, app_id, timestamp_seconds, body))
}

fn ccpayment_mac(secret: &[u8], app_id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(app_id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Verifies a CCPayment delivery: the app id, the signature over the raw `body`, then the
/// timestamp's age.
pub fn ccpayment_verify(
    secret: &[u8],
    app_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_seconds: i64,
    window_seconds: u64,
) -> Result<(), SignatureError> {
    let sent_app_id = header(headers, &["appid", "x-app-id"])?;
    let timestamp_text = header(headers, &["timestamp", "x-timestamp"])?;
    let sign = header(headers, &["sign", "x-signature"])?;
    let timestamp = parse_timestamp(timestamp_text, "Timestamp")?;
    let expected = ccpayment_mac(secret, sent_app_id, timestamp_text, body);
    let decoded = hex::decode(sign).unwrap_or_default();
    let signature_valid = decoded.as_slice().ct_eq(expected.as_slice());
    let app_id_valid = sent_app_id.as_bytes().ct_eq(app_id.as_bytes());
    if !bool::from(signature_valid) {
        return Err(SignatureError::Mismatch);
    }
    if !bool::from(app_id_valid) {
        return Err(SignatureError::WrongAppId);
    }
    check_age(timestamp, now_seconds, window_seconds)
}

/// The first present header of `names` (the canonical name, then its aliases).
fn header<'a>(headers: &'a HeaderMap, names: &[&'static str]) -> Result<&'a str, SignatureError> {
    for name in names {
        if let Some(value) = headers.get(*name) {
            return value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|text| !text.is_empty() && text.len() <= HEADER_BYTES_MAX)
                .ok_or(SignatureError::MissingHeader(names[0]));
        }
    }
    Err(SignatureError::MissingHeader(names[0]))
}

/// Unix seconds written as 1 to 12 ASCII digits.
fn parse_timestamp(text: &str, name: &'static str) -> Result<i64, SignatureError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp(name));
    }
    text.parse().map_err(|_| SignatureError::BadTimestamp(name))
}

fn check_age(timestamp: i64, now_seconds: i64, window_seconds: u64) -> Result<(), SignatureError> {
    let age_seconds = now_seconds.abs_diff(timestamp);
    if age_seconds > window_seconds {
        return Err(SignatureError::Stale { age_seconds, window_seconds });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The published Standard Webhooks test vector (the reference libraries' own tests).
    const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STANDARD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STANDARD_TIMESTAMP: i64 = 1_614_265_330;
    const STANDARD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STANDARD_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// The vector of `providers/ccpayment.md`.
    const CC_APP_ID: &str = "202302010636261620672405236006912";
    const CC_SECRET: &[u8] = b"test_app_secret";
    const CC_TIMESTAMP: &str = "1677152490";
    const CC_BODY: &[u8] = br#"{"type":"DirectDeposit","msg":{"recordId":"20240313113108112345","referenceId":"user_42","coinId":1280,"coinSymbol":"USDT","status":"Success","isFlaggedAsRisky":false}}"#;
    const CC_SIGN: &str = "ccf580ea7214df7f682cdd517b9faa809ccb6d550ceec6fde24d3cff86101be1";
    const CC_SIGN_EMPTY_BODY: &str = "4cab384ac198baedf252077724e8f96b2d4acd991adb34437768e7a50d7bd785";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn standard_headers(signature: &str, timestamp: i64) -> HeaderMap {
        headers(&[
            ("webhook-id", STANDARD_ID),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }

    #[test]
    fn the_standard_webhooks_test_vector_signs_and_verifies() {
        let key = standard_key(STANDARD_SECRET).unwrap();
        assert_eq!(standard_sign(&key, STANDARD_ID, STANDARD_TIMESTAMP, STANDARD_BODY), STANDARD_SIGNATURE);
        let sent = standard_headers(STANDARD_SIGNATURE, STANDARD_TIMESTAMP);
        assert_eq!(standard_verify(&key, &sent, STANDARD_BODY, STANDARD_TIMESTAMP, 300), Ok(()));
    }

    #[test]
    fn any_one_valid_standard_signature_suffices() {
        let key = standard_key(STANDARD_SECRET).unwrap();
        let list = format!("v1,bm9wZQ== v2,abc garbage {STANDARD_SIGNATURE}");
        let sent = standard_headers(&list, STANDARD_TIMESTAMP);
        assert_eq!(standard_verify(&key, &sent, STANDARD_BODY, STANDARD_TIMESTAMP, 300), Ok(()));
    }

    #[test]
    fn forged_or_altered_standard_deliveries_are_refused() {
        let key = standard_key(STANDARD_SECRET).unwrap();
        let now = STANDARD_TIMESTAMP;
        let sent = standard_headers(STANDARD_SIGNATURE, now);
        // One byte of the body changed.
        assert_eq!(standard_verify(&key, &sent, br#"{"test": 2432232315}"#, now, 300), Err(SignatureError::Mismatch));
        // Another key.
        let other = standard_key("whsec_c2VjcmV0LWtleS1vZi1hbm90aGVyLXNlbmRlcg==").unwrap();
        assert_eq!(standard_verify(&other, &sent, STANDARD_BODY, now, 300), Err(SignatureError::Mismatch));
        // The timestamp is part of the signed content.
        let moved = standard_headers(STANDARD_SIGNATURE, now + 1);
        assert_eq!(standard_verify(&key, &moved, STANDARD_BODY, now, 300), Err(SignatureError::Mismatch));
        // Only v1 signatures count, and the signature must be whole.
        let truncated = &STANDARD_SIGNATURE[..STANDARD_SIGNATURE.len() - 4];
        for signature in [STANDARD_SIGNATURE.replace("v1,", "v2,").as_str(), truncated, "v1,", "v1"] {
            let sent = standard_headers(signature, now);
            assert_eq!(standard_verify(&key, &sent, STANDARD_BODY, now, 300), Err(SignatureError::Mismatch));
        }
        let missing = headers(&[("webhook-id", STANDARD_ID), ("webhook-timestamp", "1614265330")]);
        assert_eq!(
            standard_verify(&key, &missing, STANDARD_BODY, now, 300),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        let bad_time = headers(&[
            ("webhook-id", STANDARD_ID),
            ("webhook-timestamp", "-5"),
            ("webhook-signature", STANDARD_SIGNATURE),
        ]);
        assert_eq!(
            standard_verify(&key, &bad_time, STANDARD_BODY, now, 300),
            Err(SignatureError::BadTimestamp("webhook-timestamp"))
        );
    }

    #[test]
    fn the_replay_window_applies_both_ways_after_the_signature() {
        let key = standard_key(STANDARD_SECRET).unwrap();
        let sent = standard_headers(STANDARD_SIGNATURE, STANDARD_TIMESTAMP);
        for now in [STANDARD_TIMESTAMP - 300, STANDARD_TIMESTAMP + 300] {
            assert_eq!(standard_verify(&key, &sent, STANDARD_BODY, now, 300), Ok(()));
        }
        for now in [STANDARD_TIMESTAMP - 301, STANDARD_TIMESTAMP + 301] {
            let error = standard_verify(&key, &sent, STANDARD_BODY, now, 300).unwrap_err();
            assert_eq!(error, SignatureError::Stale { age_seconds: 301, window_seconds: 300 });
            assert!(error.is_stale());
        }
        // A forged delivery never learns about the window.
        let forged = standard_headers("v1,bm9wZQ==", STANDARD_TIMESTAMP);
        assert_eq!(standard_verify(&key, &forged, STANDARD_BODY, 0, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn standard_keys_need_the_prefix_and_base64() {
        assert!(standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(standard_key("whsec_not base64").is_none());
        assert!(standard_key("whsec_").is_none());
        assert_eq!(standard_key(STANDARD_SECRET).unwrap().len(), 24);
    }

    #[test]
    fn the_ccpayment_vector_signs_and_verifies() {
        assert_eq!(ccpayment_sign(CC_SECRET, CC_APP_ID, CC_TIMESTAMP, CC_BODY), CC_SIGN);
        assert_eq!(ccpayment_sign(CC_SECRET, CC_APP_ID, CC_TIMESTAMP, b""), CC_SIGN_EMPTY_BODY);
        let now = 1_677_152_490;
        let sent = headers(&[("Appid", CC_APP_ID), ("Timestamp", CC_TIMESTAMP), ("Sign", CC_SIGN)]);
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &sent, CC_BODY, now, 300), Ok(()));
        let aliases = headers(&[("X-App-Id", CC_APP_ID), ("X-Timestamp", CC_TIMESTAMP), ("X-Signature", CC_SIGN)]);
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &aliases, CC_BODY, now, 300), Ok(()));
        // Uppercase hex is the same signature.
        let upper = headers(&[("Appid", CC_APP_ID), ("Timestamp", CC_TIMESTAMP), ("Sign", &CC_SIGN.to_uppercase())]);
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &upper, CC_BODY, now, 300), Ok(()));
    }

    #[test]
    fn forged_or_stale_ccpayment_deliveries_are_refused() {
        let now = 1_677_152_490;
        let sent = headers(&[("Appid", CC_APP_ID), ("Timestamp", CC_TIMESTAMP), ("Sign", CC_SIGN)]);
        let mut altered = CC_BODY.to_vec();
        altered[10] ^= 1;
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &sent, &altered, now, 300), Err(SignatureError::Mismatch));
        assert_eq!(
            ccpayment_verify(b"another_secret", CC_APP_ID, &sent, CC_BODY, now, 300),
            Err(SignatureError::Mismatch)
        );
        // Signed correctly by someone holding the secret for another app id.
        let other_app = "1";
        let other_sign = ccpayment_sign(CC_SECRET, other_app, CC_TIMESTAMP, CC_BODY);
        let other = headers(&[("Appid", other_app), ("Timestamp", CC_TIMESTAMP), ("Sign", &other_sign)]);
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &other, CC_BODY, now, 300), Err(SignatureError::WrongAppId));
        let not_hex = headers(&[("Appid", CC_APP_ID), ("Timestamp", CC_TIMESTAMP), ("Sign", "zz")]);
        assert_eq!(ccpayment_verify(CC_SECRET, CC_APP_ID, &not_hex, CC_BODY, now, 300), Err(SignatureError::Mismatch));
        let missing = headers(&[("Appid", CC_APP_ID), ("Timestamp", CC_TIMESTAMP)]);
        assert_eq!(
            ccpayment_verify(CC_SECRET, CC_APP_ID, &missing, CC_BODY, now, 300),
            Err(SignatureError::MissingHeader("sign"))
        );
        assert_eq!(
            ccpayment_verify(CC_SECRET, CC_APP_ID, &sent, CC_BODY, now + 121, 120),
            Err(SignatureError::Stale { age_seconds: 121, window_seconds: 120 })
        );
    }
}
