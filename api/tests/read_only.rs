//! The read-only mode (the kill switch) against the real `ledgerd` binary (API.md §2,
//! "Read-only mode"): switched at run time by an admin and kept in the log across a restart,
//! every write (webhooks included) refused with 503 `read_only` and `Retry-After` before any
//! other check, reads served, holds not expired while read-only and expired once writes
//! resume, `ledger_read_only`, and `server.read_only` from the environment at start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Http, STANDARD_SECRET};
use hyper::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "admin-token-for-the-kill-switch";

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledgerd.toml");
    std::fs::write(
        &path,
        format!(
            "[[auth.tokens]]\nname = \"operator\"\nsha256 = \"{}\"\nrole = \"admin\"\n\n\
             [[webhooks.providers]]\nname = \"processor\"\nscheme = \"standard\"\nsecret = \"{STANDARD_SECRET}\"\n",
            hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()))
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, environment: &[(&str, &str)]) -> common::Server {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_LOG").arg("serve").arg("--bind").arg("127.0.0.1:0");
    command.arg("--data-dir").arg(dir.join("data")).arg("--config").arg(config(dir));
    for (name, value) in environment {
        command.env(name, value);
    }
    common::start(command).unwrap_or_else(|failure| panic!("ledgerd did not start: {}", failure.stderr))
}

async fn read_only_gauge(http: &Http) -> f64 {
    let text = http.get("/metrics").await.text;
    text.lines()
        .find_map(|line| line.strip_prefix("ledger_read_only ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ledger_read_only in\n{text}"))
}

#[track_caller]
fn assert_read_only(reply: &common::Reply) {
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "read_only");
    let retry_after: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_refuses_every_write_keeps_reads_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let http = Http::new(server.address).with_token(ADMIN_TOKEN);
    for (id, overdraft) in [("alice", "100"), ("bob", "0")] {
        http.post("/v1/accounts", json!({"id": id, "currency": "USD", "overdraft_limit": overdraft}))
            .await
            .assert_status(StatusCode::CREATED);
    }
    let hold = json!({"id": "h-1", "debit_account": "alice", "credit_account": "bob", "amount": "5",
                      "pending": true, "timeout_seconds": 2});
    http.post("/v1/transfers", hold).await.assert_status(StatusCode::CREATED);
    assert_eq!(read_only_gauge(&http).await, 0.0);

    let mode = http.post("/v1/admin/mode", json!({"mode": "read_only", "reason": "incident 42"})).await;
    let mode = mode.assert_status(StatusCode::OK);
    assert_eq!((mode["mode"].as_str(), mode["reason"].as_str()), (Some("read_only"), Some("incident 42")));
    assert!(mode["since"].as_str().is_some_and(|since| since.ends_with('Z')), "{mode}");

    let transfer = json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "1"});
    assert_read_only(&http.post("/v1/transfers", transfer.clone()).await);
    assert_read_only(&http.post("/v1/accounts", json!({"id": "carol", "currency": "USD"})).await);
    assert_read_only(&http.post("/v1/transfers/h-1/void", json!({})).await);
    // Before every other check: a malformed body and no token at all get the same answer.
    assert_read_only(&http.post("/v1/transfers", json!({"nonsense": true})).await);
    assert_read_only(&Http::new(server.address).post("/v1/transfers", transfer.clone()).await);
    // Webhooks too, so that the provider retries later.
    let event = json!({"type": "deposit.completed",
                       "data": {"deposit_id": "d-1", "account": "bob", "amount": "5.00", "currency": "USD"}});
    assert_read_only(&http.standard("processor", "msg-1", &event).await);
    // Reads keep working; the hold stays pending past its deadline.
    http.get("/v1/accounts/alice").await.assert_status(StatusCode::OK);
    http.get("/v1/transfers/t-1").await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found");
    assert_eq!(read_only_gauge(&http).await, 1.0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(http.get("/v1/transfers/h-1").await.assert_status(StatusCode::OK)["status"], "pending");

    // Across a restart, the mode holds: it is in the log.
    assert!(server.stop_with("TERM").success());
    let server = start(dir.path(), &[]);
    let http = Http::new(server.address).with_token(ADMIN_TOKEN);
    let mode = http.get("/v1/admin/mode").await.assert_status(StatusCode::OK);
    assert_eq!((mode["mode"].as_str(), mode["reason"].as_str()), (Some("read_only"), Some("incident 42")));
    assert_read_only(&http.post("/v1/transfers", transfer.clone()).await);
    assert_eq!(http.get("/v1/transfers/h-1").await.assert_status(StatusCode::OK)["status"], "pending");

    // Writes resume: the overdue hold is expired, and writes apply again.
    let mode = http.post("/v1/admin/mode", json!({"mode": "read_write"})).await.assert_status(StatusCode::OK);
    assert_eq!(mode["mode"], "read_write");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = http.get("/v1/transfers/h-1").await.assert_status(StatusCode::OK)["status"].clone();
        if status == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "the hold was not expired once writes resumed: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    http.post("/v1/transfers", transfer).await.assert_status(StatusCode::CREATED);
    assert_eq!(read_only_gauge(&http).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_read_only_from_the_environment_starts_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("LEDGERD_SERVER__READ_ONLY", "true")]);
    let http = Http::new(server.address).with_token(ADMIN_TOKEN);
    assert_eq!(http.get("/v1/admin/mode").await.assert_status(StatusCode::OK)["mode"], "read_only");
    assert_read_only(&http.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await);
    assert_eq!(read_only_gauge(&http).await, 1.0);
    http.get("/v1/accounts/alice").await.assert_error(StatusCode::NOT_FOUND, "account_not_found");
    // A client token may not switch it.
    let client = Http::new(server.address).with_token("unknown-token");
    client.get("/v1/admin/mode").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

/// Runs an offline `ledgerd` command and gives its stdout; panics with stderr if it fails.
fn offline(args: &[&std::ffi::OsStr]) -> String {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_ledgerd")).env_remove("RUST_LOG").args(args).output().unwrap();
    assert!(output.status.success(), "ledgerd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The mode is a record of the log like any other: a point-in-time restore to just before the
/// switch gives a ledger that takes writes, one to the switch itself a read-only ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_keeps_the_mode_of_its_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let http = Http::new(server.address).with_token(ADMIN_TOKEN);
    for id in ["alice", "bob"] {
        let account = json!({"id": id, "currency": "USD", "overdraft_limit": "unlimited"});
        http.post("/v1/accounts", account).await.assert_status(StatusCode::CREATED);
    }
    let transfer = json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "1"});
    let before_switch =
        http.post("/v1/transfers", transfer).await.assert_status(StatusCode::CREATED)["seq"].as_u64().unwrap();
    assert!(server.stop_with("TERM").success());
    let data_dir = dir.path().join("data");
    let snapshot = offline(&["snapshot".as_ref(), "create".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str()]);
    let snapshot = snapshot.trim().to_owned();

    let server = start(dir.path(), &[]);
    let http = Http::new(server.address).with_token(ADMIN_TOKEN);
    http.post("/v1/admin/mode", json!({"mode": "read_only", "reason": "incident 7"}))
        .await
        .assert_status(StatusCode::OK);
    assert!(server.stop_with("TERM").success());

    for (to_seq, expected) in [(before_switch, "read_write"), (before_switch + 1, "read_only")] {
        let restored = tempfile::tempdir().unwrap();
        let target = restored.path().join("data");
        let to = to_seq.to_string();
        let printed = offline(&[
            "restore".as_ref(),
            "--from".as_ref(),
            snapshot.as_ref(),
            "--source-dir".as_ref(),
            data_dir.as_os_str(),
            "--data-dir".as_ref(),
            target.as_os_str(),
            "--to-seq".as_ref(),
            to.as_ref(),
        ]);
        assert!(printed.contains(&format!("restored_to_seq: {to_seq}")), "{printed}");
        let server = start(restored.path(), &[]);
        let http = Http::new(server.address).with_token(ADMIN_TOKEN);
        let mode = http.get("/v1/admin/mode").await.assert_status(StatusCode::OK);
        assert_eq!(mode["mode"], expected, "restored to {to_seq}: {mode}");
        let write = http.post("/v1/accounts", json!({"id": "carol", "currency": "USD"})).await;
        if expected == "read_only" {
            assert_eq!(mode["reason"], "incident 7");
            assert_read_only(&write);
        } else {
            write.assert_status(StatusCode::CREATED);
        }
        assert_eq!(http.balance("bob").await, "1.00");
        assert!(server.stop_with("TERM").success());
    }
}
