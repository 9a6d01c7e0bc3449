//! JWT bearer tokens and TLS, against the real `ledgerd` binary (API.md §2, "Authentication,
//! TLS, CORS, audit"): the JWT matrix (valid, expired, not yet valid, wrong issuer or audience,
//! `alg: none`, tampered, a missing or unknown role, the wrong algorithm) for an HS256 issuer
//! whose secret comes from the environment and an EdDSA issuer whose public key is a PEM file
//! made here, an RS256 issuer with a test-only key pair from `tests/fixtures`, and HTTPS with a self-signed certificate made here (rcgen).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET_VARIABLE: &str = "LEDGERD_TEST_JWT_SECRET";
const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "ledgerd";

fn start(dir: &Path, extra: &str) -> common::Server {
    let config = dir.join("ledgerd.toml");
    std::fs::write(&config, extra).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_LOG").env(SECRET_VARIABLE, SECRET).arg("serve").arg("--bind").arg("127.0.0.1:0");
    command.arg("--data-dir").arg(dir.join("data")).arg("--config").arg(&config);
    common::start(command).unwrap_or_else(|failure| panic!("ledgerd did not start: {}", failure.stderr))
}

/// The status of `GET /v1/accounts/nobody` with `token` (404 once authenticated, 401 if not).
fn status_with(address: SocketAddr, token: &str) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET /v1/accounts/nobody HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{response}"))
}

fn now() -> i64 {
    common::unix_seconds()
}

fn claims(overrides: &Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-1", "exp": now() + 600, "role": "client"});
    for (key, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn jwt_bearer_tokens_are_checked_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let ed_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public_key_file = dir.path().join("idp-ed25519.pem");
    std::fs::write(&public_key_file, ed_key.public_key_pem()).unwrap();
    let config = format!(
        "[auth]\nfailures_per_minute = 1000\n\
         [[auth.jwt]]\nname = \"hs\"\nalgorithm = \"HS256\"\nsecret_env = \"{SECRET_VARIABLE}\"\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         [[auth.jwt]]\nname = \"ed\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{}\"\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nrole_claim = \"ledger_role\"\n",
        public_key_file.display()
    );
    let server = start(dir.path(), &config);
    let address = server.address;
    let ed_encoding = EncodingKey::from_ed_pem(ed_key.serialize_pem().as_bytes()).unwrap();
    let eddsa = |claims: &Value| jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &ed_encoding).unwrap();

    assert_eq!(status_with(address, &hs256(&claims(&json!({})))), 404, "valid HS256");
    assert_eq!(status_with(address, &hs256(&claims(&json!({"role": "admin"})))), 404, "valid admin");
    assert_eq!(
        status_with(address, &eddsa(&claims(&json!({"role": null, "ledger_role": "client"})))),
        404,
        "valid EdDSA"
    );
    // Within the 60 s leeway.
    assert_eq!(status_with(address, &hs256(&claims(&json!({"exp": now() - 30})))), 404, "expired within the leeway");
    let refused = [
        ("expired", hs256(&claims(&json!({"exp": now() - 300})))),
        ("not yet valid", hs256(&claims(&json!({"nbf": now() + 300})))),
        ("no exp", hs256(&claims(&json!({"exp": null})))),
        ("wrong issuer", hs256(&claims(&json!({"iss": "https://other.test"})))),
        ("wrong audience", hs256(&claims(&json!({"aud": "someone-else"})))),
        ("missing role", hs256(&claims(&json!({"role": null})))),
        ("unknown role", hs256(&claims(&json!({"role": "root"})))),
        ("EdDSA role in the wrong claim", eddsa(&claims(&json!({})))),
        (
            "signed with another secret",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(&json!({})),
                &EncodingKey::from_secret(b"another-secret-of-at-least-thirty-two-bytes"),
            )
            .unwrap(),
        ),
    ];
    for (case, token) in refused {
        assert_eq!(status_with(address, &token), 401, "{case}");
    }
    // Tampered: the payload changed after signing.
    let valid = hs256(&claims(&json!({})));
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = base64url(claims(&json!({"role": "admin"})).to_string().as_bytes());
    assert_eq!(status_with(address, &format!("{}.{tampered_payload}.{}", parts[0], parts[2])), 401, "tampered");
    // `alg: none`, unsigned.
    let none_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims(&json!({"role": "admin"})).to_string().as_bytes());
    assert_eq!(status_with(address, &format!("{none_header}.{payload}.")), 401, "alg none");
    // HS256 signed with the EdDSA entry's public key as the secret (algorithm confusion).
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&json!({"ledger_role": "admin"})),
        &EncodingKey::from_secret(ed_key.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(status_with(address, &confused), 401, "algorithm confusion");
}

/// An RS256 issuer: the public key from a PEM file (a key pair kept for this test only in
/// `tests/fixtures`), a token signed with its private key accepted, one whose signature or
/// payload was changed refused, and the public key used as an HS256 secret refused.
#[test]
fn rs256_tokens_are_checked_with_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let public_key_file = fixtures.join("jwt-rs256-test-only.pub.pem");
    let private_key = std::fs::read(fixtures.join("jwt-rs256-test-only.key.pem")).unwrap();
    let config = format!(
        "[auth]\nfailures_per_minute = 1000\n\
         [[auth.jwt]]\nname = \"rs\"\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
        public_key_file.display()
    );
    let server = start(dir.path(), &config);
    let address = server.address;
    let rs_encoding = EncodingKey::from_rsa_pem(&private_key).unwrap();
    let rs256 = |claims: &Value| jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &rs_encoding).unwrap();

    assert_eq!(status_with(address, &rs256(&claims(&json!({})))), 404, "valid RS256");
    assert_eq!(status_with(address, &rs256(&claims(&json!({"exp": now() - 300})))), 401, "expired");
    assert_eq!(status_with(address, &rs256(&claims(&json!({"aud": "someone-else"})))), 401, "wrong audience");
    let valid = rs256(&claims(&json!({})));
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_payload = base64url(claims(&json!({"role": "admin"})).to_string().as_bytes());
    assert_eq!(status_with(address, &format!("{}.{tampered_payload}.{}", parts[0], parts[2])), 401, "tampered");
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], base64url(&signature));
    assert_eq!(status_with(address, &forged), 401, "signature changed");
    let public_pem = std::fs::read(&public_key_file).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&json!({"role": "admin"})),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(status_with(address, &confused), 401, "algorithm confusion");
}

#[test]
fn a_short_hs256_secret_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledgerd.toml");
    std::fs::write(
        &config,
        "[[auth.jwt]]\nname = \"hs\"\nalgorithm = \"HS256\"\nsecret_env = \"LEDGERD_TEST_SHORT\"\nissuer = \"i\"\naudience = \"a\"\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env("LEDGERD_TEST_SHORT", "too-short").arg("serve").arg("--bind").arg("127.0.0.1:0");
    command.arg("--data-dir").arg(dir.path().join("data")).arg("--config").arg(&config);
    let Err(failure) = common::start(command) else { panic!("ledgerd started with a 9-byte HS256 secret") };
    assert!(!failure.status.success());
    assert!(failure.stderr.contains("at least 32"), "{}", failure.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_server_speaks_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let config =
        format!("[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert_file.display(), key_file.display());
    let server = start(dir.path(), &config);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(server.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");

    // Plain HTTP on the same port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.address).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = plain.read_to_end(&mut bytes);
    assert!(!String::from_utf8_lossy(&bytes).contains("\"status\":\"ok\""), "{bytes:?}");
}
