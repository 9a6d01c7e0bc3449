//! The listener's limits and the pre-routing error shapes, against the real `ledgerd` binary
//! listening on `127.0.0.1:0`, spoken to over raw TCP (API.md §2): half-open connections by
//! the thousand do not keep `/health` from a fresh client, the header, idle and body timeouts,
//! the refusal of new connections only when every open one is busy, and the JSON error shape
//! of what is refused before a route is found.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `ledgerd serve` on a fresh data dir with `server_keys` added to `[server]`.
fn start_server(dir: &Path, server_keys: &str) -> common::Server {
    let config = dir.join("ledgerd.toml");
    std::fs::write(&config, format!("[server]\n{server_keys}\n")).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_LOG").arg("serve").arg("--bind").arg("127.0.0.1:0");
    command.arg("--data-dir").arg(dir.join("data")).arg("--config").arg(&config);
    common::start(command).unwrap_or_else(|failure| panic!("ledgerd did not start: {}", failure.stderr))
}

/// A response read off a raw connection.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.head);
        assert!(self.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", self.head);
        assert_eq!(self.json()["error"]["code"], code, "{}", self.head);
        assert!(self.json()["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
    }
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads one response (head and a `Content-Length` body) from `stream`.
fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut bytes = Vec::new();
    let mut buffer = [0_u8; 8192];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the connection closed before a response head: {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|value| value.trim().to_owned()))
        .map_or(0, |value| value.parse().unwrap());
    let mut body = bytes[head_end..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the connection closed inside a body");
        body.extend_from_slice(&buffer[..read]);
    }
    RawResponse { status, head, body }
}

/// Sends `bytes` on a fresh connection and reads one response.
fn exchange(address: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut stream = connect(address);
    stream.write_all(bytes).unwrap();
    read_response(&mut stream)
}

/// Whether the server closes `stream` within `within` (EOF or reset, no bytes).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0_u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
    }
}

fn metric(address: SocketAddr, family: &str, labels: &[(&str, &str)]) -> f64 {
    let response = exchange(address, b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8(response.body).unwrap();
    let unlabelled =
        || text.lines().find_map(|line| line.strip_prefix(family)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    let value = if labels.is_empty() { unlabelled() } else { common::metric_value(&text, family, labels) };
    value.unwrap_or_else(|| panic!("no {family} {labels:?} in\n{text}"))
}

#[test]
fn thousands_of_half_open_connections_do_not_keep_health_from_a_fresh_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "connections_max = 500");
    let mut half_open = Vec::new();
    for _ in 0..3000 {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Half: ").unwrap();
        half_open.push(stream);
    }
    let started = Instant::now();
    let mut stream = connect(server.address);
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: fresh\r\n\r\n").unwrap();
    let response = read_response(&mut stream);
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(response.json()["status"], "ok");
    assert!(metric(server.address, "ledger_connections_closed_total", &[("reason", "evicted")]) >= 2500.0);
    // Counter series exist from the start, at 0.
    assert_eq!(metric(server.address, "ledger_connections_refused_total", &[]), 0.0);
    assert_eq!(metric(server.address, "ledger_transfers_total", &[("result", "insufficient_funds")]), 0.0);
    assert_eq!(metric(server.address, "ledger_auth_blocked_total", &[]), 0.0);
    drop(half_open);
}

#[test]
fn a_request_head_must_arrive_in_time_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "header_timeout_ms = 300\nidle_timeout_ms = 600");
    // Nothing sent at all, and half a head: closed after the header timeout.
    let mut silent = connect(server.address);
    let mut half = connect(server.address);
    half.write_all(b"GET /health HTTP/1.1\r\nHost: slow\r\n").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    assert!(closed_within(&mut half, Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    // A keep-alive connection: served, then closed once idle for the idle timeout.
    let mut keep_alive = connect(server.address);
    keep_alive.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut keep_alive).status, 200);
    let idle_from = Instant::now();
    assert!(closed_within(&mut keep_alive, Duration::from_secs(5)));
    assert!(idle_from.elapsed() >= Duration::from_millis(500), "{:?}", idle_from.elapsed());
    assert!(metric(server.address, "ledger_connections_closed_total", &[("reason", "header_timeout")]) >= 2.0);
    assert!(metric(server.address, "ledger_connections_closed_total", &[("reason", "idle_timeout")]) >= 1.0);
}

#[test]
fn a_body_not_complete_in_time_is_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "request_timeout_ms = 400");
    let mut stream = connect(server.address);
    stream
        .write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"id\":")
        .unwrap();
    read_response(&mut stream).assert_error(408, "request_timeout");
}

#[test]
fn new_connections_are_refused_only_when_every_open_one_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "connections_max = 2\nrequest_timeout_ms = 3000");
    // Two connections busy with a request whose body is still arriving.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(server.address);
        stream
            .write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{")
            .unwrap();
        busy.push(stream);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = connect(server.address);
    let _ = refused.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(closed_within(&mut refused, Duration::from_secs(2)), "a third connection was served");
    // Once they are answered (408), there is room again.
    for stream in &mut busy {
        read_response(stream).assert_error(408, "request_timeout");
    }
    drop(busy);
    let response = exchange(server.address, b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 200);
    assert!(metric(server.address, "ledger_connections_refused_total", &[]) >= 1.0);
}

#[test]
fn what_is_refused_before_routing_has_the_json_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "body_limit_bytes = 1000");
    let address = server.address;
    exchange(address, b"GARBAGE\r\n\r\n").assert_error(400, "invalid_request");
    exchange(address, b"GET /health HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n").assert_error(400, "invalid_request");
    let huge_header = format!("GET /health HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(80_000));
    exchange(address, huge_header.as_bytes()).assert_error(431, "headers_too_large");
    let long_target = format!("GET /v1/accounts/{} HTTP/1.1\r\nHost: test\r\n\r\n", "a".repeat(20_000));
    exchange(address, long_target.as_bytes()).assert_error(414, "uri_too_long");
    exchange(address, b"DELETE /health HTTP/1.1\r\nHost: test\r\n\r\n").assert_error(405, "method_not_allowed");
    exchange(address, b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n").assert_error(404, "not_found");
    let webhook = b"POST /v1/webhooks/%ff HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let response = exchange(address, webhook);
    assert!(response.status >= 400, "{}", response.head);
    assert!(response.json()["error"]["code"].is_string(), "{}", response.head);
    // A body announced over the limit: 413 at once, no `100 Continue`, nothing read.
    let mut stream = connect(address);
    stream
        .write_all(
            b"POST /v1/transfers HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let response = read_response(&mut stream);
    response.assert_error(413, "payload_too_large");
    // Every answer carries the security headers.
    for response in [response, exchange(address, b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")] {
        let head = response.head.to_ascii_lowercase();
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");
    }
}
