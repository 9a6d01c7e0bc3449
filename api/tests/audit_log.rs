//! The audit log against the real `ledgerd` binary when its file refuses every write
//! (`/dev/full`: each write fails with "no space left"): the writes of clients are still
//! answered and applied, and every line that could not be written is counted in
//! `ledger_audit_log_failures_total`, never dropped in silence. (What a written line holds is
//! checked by `hardening_routes`.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Http;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_disk_refuses_are_counted_and_writes_are_still_answered() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("NOTICE: no /dev/full on this machine; the audit log failure test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ledgerd.toml");
    std::fs::write(&config, format!("[server]\naudit_log = \"{}\"\n", full.display())).unwrap();
    let server = common::start(common::serve_command(&config, &dir.path().join("data")))
        .unwrap_or_else(|failure| panic!("ledgerd did not start: {}", failure.stderr));
    let http = Http::new(server.address);
    let failures = |text: &str| common::metric_value(text, "ledger_audit_log_failures_total", &[]);
    assert_eq!(failures(&http.get("/metrics").await.text), Some(0.0), "the counter starts at 0");

    for account in ["alice", "bob", "carol"] {
        http.post("/v1/accounts", json!({"id": account, "currency": "USD"})).await.assert_status(StatusCode::CREATED);
    }
    assert_eq!(http.get("/v1/accounts/carol").await.assert_status(StatusCode::OK)["id"], "carol");
    // The writer thread counts what it could not write once it has tried: wait for it, up to
    // a deadline (three lines, each refused).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = failures(&http.get("/metrics").await.text).unwrap_or(0.0);
        if counted >= 3.0 {
            assert_eq!(counted, 3.0, "one failure per refused line");
            break;
        }
        assert!(Instant::now() < deadline, "only {counted} audit line failures counted after 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = common::metric_value(&http.get("/metrics").await.text, "ledger_audit_log_lines_total", &[]);
    assert_eq!(lines, Some(0.0), "no line counts as written");
    server.stop_with("TERM");
}
