//! The documented backup procedure (RUNBOOK.md, "Back up"), against the real binary: while
//! clients keep writing, `POST /v1/admin/backup` writes a complete data dir elsewhere; the
//! backup then passes `ledgerd verify`, holds every transfer acknowledged before the backup was
//! asked for, restores to a point in time, and serves. Also the route's refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::{Http, arg, printed, run, serve};
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_writes_is_a_complete_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = crate::support::config_file(dir.path(), "ledgerd.toml", "[storage]\nsnapshot_interval_seconds = 1\n");
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    http.post("/v1/accounts", json!({"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"})).await;
    http.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await;

    // Writers keep going during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (http, stop, acknowledged) = (http.clone(), stop.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let mut step = 0;
            while !stop.load(Ordering::Relaxed) {
                step += 1;
                let body = json!({"id": format!("w{writer}-{step}"), "debit_account": "bank", "credit_account": "alice", "amount": "1.00"});
                let (status, _) = http.try_send(Method::POST, "/v1/transfers", Some(&body)).await.unwrap();
                assert_eq!(status, StatusCode::CREATED);
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            step
        }));
    }
    while acknowledged.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, before) = http.get("/v1/transfers/w0-1").await;
    assert_eq!(before["status"], "posted");
    let acknowledged_before: Vec<String> = (1..=50).map(|step| format!("w1-{step}")).collect();

    let backup_dir = dir.path().join("backups").join("first");
    let (status, report) = http.post("/v1/admin/backup", json!({"destination": arg(&backup_dir)})).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let seq = report["snapshot"]["seq"].as_u64().unwrap();
    assert_eq!(report["log_first_seq"], 1);
    // The log is copied after the snapshot and the history: it holds at least the snapshot's seq,
    // and what was acknowledged while they were copied.
    let log_last_seq = report["log_last_seq"].as_u64().unwrap();
    assert!(log_last_seq >= seq, "{report}");
    assert!(report["snapshots_copied"].as_u64().unwrap() >= 1);
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(written > 300);

    // Refusals: relative, inside the data dir, not empty; and a client token may not.
    for (destination, needle) in [
        ("relative/dir".to_owned(), "absolute"),
        (arg(&data_dir.join("inside")).to_owned(), "inside the data dir"),
        (arg(&backup_dir).to_owned(), "must not exist or be empty"),
    ] {
        let (status, body) = http.post("/v1/admin/backup", json!({"destination": destination})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["field"].as_str()),
            (Some("invalid_request"), Some("destination"))
        );
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{body}");
    }
    let (status, body) = http.post("/v1/admin/backup", json!({"to": "/tmp/x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, snapshot) = http.post("/v1/admin/snapshots", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    assert!(snapshot["seq"].as_u64().unwrap() >= seq);
    let (status, again) = http.try_send(Method::POST, "/v1/admin/snapshots", None).await.unwrap();
    assert_eq!(
        (status, again["seq"].clone(), again["written"].clone()),
        (StatusCode::CREATED, snapshot["seq"].clone(), json!(false))
    );
    let (_, live_alice) = http.get("/v1/accounts/alice").await;
    server.terminate();

    // The backup is a sound data dir at the end of its log, holding what was acknowledged before it.
    let verified = printed(run(&["verify", "--data-dir", arg(&backup_dir)]));
    verified.assert_success();
    assert_eq!(verified.field("last_seq"), Some(log_last_seq.to_string().as_str()), "{}", verified.stdout);
    assert_eq!(verified.field("log"), Some(format!("seq 1 to {log_last_seq}").as_str()));
    // Point in time inside the backup: its log reaches back to seq 1.
    let snapshot_files = crate::support::snapshot_files(&backup_dir);
    let oldest = snapshot_files.first().unwrap();
    let oldest_seq: u64 = oldest.file_stem().unwrap().to_str().unwrap()["snap-".len()..].parse().unwrap();
    let restored = dir.path().join("restored");
    let to = ((oldest_seq + seq) / 2).max(oldest_seq).to_string();
    printed(run(&["restore", "--from", arg(oldest), "--data-dir", arg(&restored), "--to-seq", &to])).assert_success();
    let verified = printed(run(&["verify", "--data-dir", arg(&restored)]));
    assert_eq!(verified.assert_success().field("last_seq"), Some(to.as_str()));

    let server = serve(&backup_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    for id in &acknowledged_before {
        let (status, transfer) = http.get(&format!("/v1/transfers/{id}")).await;
        assert_eq!((status, transfer["amount"].as_str()), (StatusCode::OK, Some("1.00")), "{id}");
    }
    let (_, alice) = http.get("/v1/accounts/alice").await;
    let in_backup: u64 = alice["credits_posted"].as_str().unwrap().split('.').next().unwrap().parse().unwrap();
    let live: u64 = live_alice["credits_posted"].as_str().unwrap().split('.').next().unwrap().parse().unwrap();
    assert!(in_backup >= 300 && in_backup <= live, "backup {in_backup}, live {live}");
    server.terminate();
}
