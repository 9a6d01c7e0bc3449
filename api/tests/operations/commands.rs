//! The offline commands against the real binary: `snapshot create|list|verify`, `restore`
//! (point in time) and `verify`; log retention; the data dir lock; and their errors.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{Http, Random, arg, printed, run, serve};
use hyper::StatusCode;
use serde_json::{Value, json};

/// Opens `bank` (unlimited) and `user-0..users` in USD.
async fn open_accounts(http: &Http, users: usize) -> Vec<String> {
    let (status, body) =
        http.post("/v1/accounts", json!({"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut names = vec!["bank".to_owned()];
    for index in 0..users {
        let name = format!("user-{index}");
        let (status, body) = http.post("/v1/accounts", json!({"id": name, "currency": "USD"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        names.push(name);
    }
    names
}

/// One acknowledged plain transfer and the sequence the server gave it.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    debit: String,
    credit: String,
    cents: i64,
    seq: u64,
}

/// Sends `count` random transfers one by one (bank → user, or user → user when funded).
async fn send_transfers(http: &Http, names: &[String], prefix: &str, count: usize, random: &mut Random) -> Vec<Sent> {
    let mut sent = Vec::new();
    for index in 0..count {
        let (debit, credit) = if index % 3 == 0 || sent.is_empty() {
            ("bank".to_owned(), names[1 + random.index(names.len() - 1)].clone())
        } else {
            (names[1 + random.index(names.len() - 1)].clone(), names[random.index(names.len())].clone())
        };
        if debit == credit {
            continue;
        }
        let cents = 1 + i64::try_from(random.below(2_000)).unwrap();
        let id = format!("{prefix}-{index}");
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let (status, body) = http
            .post(
                "/v1/transfers",
                json!({"id": id, "debit_account": debit, "credit_account": credit, "amount": amount}),
            )
            .await;
        match status {
            StatusCode::CREATED => {
                sent.push(Sent { id, debit, credit, cents, seq: body["seq"].as_u64().unwrap() });
            }
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(body["error"]["code"], "insufficient_funds", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    sent
}

/// Balances (in cents) of every account after the transfers with `seq <= at`.
fn balances_at(names: &[String], sent: &[Sent], at: u64) -> BTreeMap<String, i64> {
    let mut balances: BTreeMap<String, i64> = names.iter().map(|name| (name.clone(), 0)).collect();
    for transfer in sent.iter().filter(|transfer| transfer.seq <= at) {
        *balances.get_mut(&transfer.debit).unwrap() -= transfer.cents;
        *balances.get_mut(&transfer.credit).unwrap() += transfer.cents;
    }
    balances
}

fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Snapshot ids from `snapshot list --json`.
fn listed(data_dir: &Path) -> Vec<Value> {
    let output = printed(run(&["snapshot", "list", "--data-dir", arg(data_dir), "--json"]));
    output.assert_success();
    serde_json::from_str::<Value>(&output.stdout).unwrap().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_gives_exactly_the_balances_at_that_seq() {
    let seed = crate::support::seed("RESTORE_SEED");
    let mut random = Random::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = crate::support::config_file(dir.path(), "ledgerd.toml", "[storage]\nsnapshot_interval_seconds = 0\n");
    let config_args = ["--config", arg(&config)];

    // Accounts, a snapshot, transfers, another snapshot, more transfers.
    let server = serve(&data_dir, &config_args);
    let http = Http::new(server.address);
    let names = open_accounts(&http, 6).await;
    server.terminate();
    let first = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)]));
    first.assert_success();
    let first_id = first.stdout.trim().to_owned();
    assert_eq!(first_id, format!("snap-{:020}", names.len()), "the snapshot is at the accounts' last seq");

    let server = serve(&data_dir, &config_args);
    let http = Http::new(server.address);
    let mut sent = send_transfers(&http, &names, "a", 60, &mut random).await;
    server.terminate();
    let second = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)]));
    second.assert_success();
    let second_seq = sent.last().unwrap().seq;
    assert_eq!(second.stdout.trim(), format!("snap-{second_seq:020}"));

    let server = serve(&data_dir, &config_args);
    let http = Http::new(server.address);
    sent.extend(send_transfers(&http, &names, "b", 60, &mut random).await);
    server.terminate();
    let last_seq = sent.last().unwrap().seq;

    let list = listed(&data_dir);
    assert_eq!(list.len(), 2);
    let files = crate::support::snapshot_files(&data_dir);

    // Points in time: each snapshot's own seq, both ends, and random ones in between.
    let first_seq = u64::try_from(names.len()).unwrap();
    let mut points = vec![first_seq, first_seq + 1, second_seq, second_seq + 1, last_seq];
    for _ in 0..3 {
        points.push(first_seq + random.below(last_seq - first_seq + 1));
    }
    for (index, to_seq) in points.into_iter().enumerate() {
        // From a file (its own data dir's log), or from an id in --source-dir.
        let base = if to_seq >= second_seq && index % 2 == 0 { &files[1] } else { &files[0] };
        let target = dir.path().join(format!("restored-{index}"));
        let to = to_seq.to_string();
        let restored = if index % 3 == 1 {
            let id = base.file_stem().unwrap().to_str().unwrap();
            printed(run(&[
                "restore",
                "--from",
                id,
                "--source-dir",
                arg(&data_dir),
                "--data-dir",
                arg(&target),
                "--to-seq",
                &to,
            ]))
        } else {
            printed(run(&["restore", "--from", arg(base), "--data-dir", arg(&target), "--to-seq", &to]))
        };
        restored.assert_success();
        assert!(restored.stdout.contains(&format!("last_seq: {to_seq}")), "{}", restored.stdout);

        let verified = printed(run(&["verify", "--data-dir", arg(&target)]));
        verified.assert_success();
        assert_eq!(verified.field("last_seq"), Some(to.as_str()), "{}", verified.stdout);

        let server = serve(&target, &config_args);
        let http = Http::new(server.address);
        let expected = balances_at(&names, &sent, to_seq);
        let actual = crate::support::balances(&http, names.iter().cloned()).await;
        let expected_text: BTreeMap<String, String> =
            expected.iter().map(|(name, cents)| (name.clone(), cents_text(*cents))).collect();
        assert_eq!(actual, expected_text, "balances at seq {to_seq} (seed {seed})");
        // Transfers after the point are not there; those at or before it are.
        for transfer in sent.iter().step_by(7) {
            let (status, _) = http.get(&format!("/v1/transfers/{}", transfer.id)).await;
            let expected = if transfer.seq <= to_seq { StatusCode::OK } else { StatusCode::NOT_FOUND };
            assert_eq!(status, expected, "{} at seq {} restored to {to_seq}", transfer.id, transfer.seq);
        }
        // The restored dir serves and continues the log after the point.
        let (status, body) = http
            .post("/v1/transfers", json!({"id": format!("after-{index}"), "debit_account": "bank", "credit_account": "user-0", "amount": "1.00"}))
            .await;
        assert_eq!((status, body["seq"].as_u64()), (StatusCode::CREATED, Some(to_seq + 1)), "{body}");
        server.terminate();
        let verified = printed(run(&["verify", "--data-dir", arg(&target)]));
        verified.assert_success();
        assert_eq!(verified.field("last_seq"), Some((to_seq + 1).to_string().as_str()));
    }

    // Errors: beyond the log, before the snapshot, a non-empty target, an id without its dir.
    let target = dir.path().join("refused");
    let beyond = (last_seq + 1).to_string();
    printed(run(&["restore", "--from", arg(&files[0]), "--data-dir", arg(&target), "--to-seq", &beyond]))
        .assert_error(&["log ends at seq"]);
    let before = (second_seq - 1).to_string();
    printed(run(&["restore", "--from", arg(&files[1]), "--data-dir", arg(&target), "--to-seq", &before]))
        .assert_error(&["snapshot is at seq"]);
    assert!(!target.exists(), "a refused restore creates nothing");
    printed(run(&["restore", "--from", arg(&files[0]), "--data-dir", arg(&data_dir)])).assert_error(&["not empty"]);
    printed(run(&["restore", "--from", &first_id, "--data-dir", arg(&target)])).assert_error(&["--source-dir"]);
    printed(run(&["restore", "--from", "nowhere.snap", "--data-dir", arg(&target)])).assert_error(&["nowhere.snap"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_list_verify_and_verify_report_and_respect_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = crate::support::config_file(dir.path(), "ledgerd.toml", "[storage]\nsnapshot_interval_seconds = 0\n");
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    let names = open_accounts(&http, 3).await;
    let mut random = Random::new(7);
    let sent = send_transfers(&http, &names, "t", 30, &mut random).await;
    let (status, _) =
        http.post("/v1/accounts", json!({"id": "eu-bank", "currency": "EUR", "overdraft_limit": "unlimited"})).await;
    assert_eq!(status, StatusCode::CREATED);
    http.post("/v1/accounts", json!({"id": "eu-user", "currency": "EUR"})).await;
    let (status, hold) = http
        .post("/v1/transfers", json!({"id": "eu-hold", "debit_account": "eu-bank", "credit_account": "eu-user", "amount": "5", "pending": true}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");

    // While the server runs: commands that need the log refuse clearly; those that read only
    // snapshot files work.
    for command in
        [vec!["snapshot", "create", "--data-dir", arg(&data_dir)], vec!["verify", "--data-dir", arg(&data_dir)]]
    {
        printed(run(&command)).assert_error(&["locked", "stop the server"]);
    }
    printed(run(&["snapshot", "list", "--data-dir", arg(&data_dir)])).assert_success();
    let last_seq = hold["seq"].as_u64().unwrap();
    server.terminate();

    let created = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)]));
    created.assert_success();
    let id = created.stdout.trim().to_owned();
    assert_eq!(id, format!("snap-{last_seq:020}"));
    // Nothing new in the log: the same snapshot.
    let again = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)]));
    assert_eq!(again.assert_success().stdout.trim(), id);

    let list = listed(&data_dir);
    assert_eq!(list.len(), 1);
    let entry = list[0].as_object().unwrap();
    let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{entry:?}");
    for key in ["id", "seq", "accounts", "created_at", "bytes"] {
        assert!(entry.contains_key(key), "{key} missing: {entry:?}");
    }
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["seq"], last_seq);
    assert_eq!(entry["accounts"], 6);
    let file = &crate::support::snapshot_files(&data_dir)[0];
    assert_eq!(entry["bytes"], std::fs::metadata(file).unwrap().len());
    let created_at = entry["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 24 && created_at.ends_with('Z') && created_at.as_bytes()[10] == b'T',
        "RFC 3339 UTC with milliseconds: {created_at}"
    );
    let text = printed(run(&["snapshot", "list", "--data-dir", arg(&data_dir)]));
    let lines: Vec<&str> = text.assert_success().stdout.lines().collect();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with(&id) && lines[0].contains(&format!("seq={last_seq}")) && lines[0].contains("accounts=6")
    );

    printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir)])).assert_success();
    let one = printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir), "--id", &id]));
    assert!(one.assert_success().stdout.contains("sound"));
    printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir), "--id", "snap-00000000000000000001"]))
        .assert_error(&["no snapshot"]);
    printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir), "--id", "../../etc/passwd"]))
        .assert_error(&["not a snapshot id"]);

    let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
    verified.assert_success();
    assert_eq!(verified.field("last_seq"), Some(last_seq.to_string().as_str()), "{}", verified.stdout);
    assert_eq!(verified.field("accounts"), Some("6"));
    let transfers = verified.field("transfers").unwrap();
    assert!(transfers.starts_with(&format!("{} (posted {}, pending 1,", sent.len() + 1, sent.len())), "{transfers}");
    assert_eq!(verified.field("currency EUR"), Some("accounts 2, balances sum 0.00, positive balances 0.00"));
    assert!(verified.field("currency USD").unwrap().contains("balances sum 0.00"), "{}", verified.stdout);
    assert_eq!(verified.field("result"), Some("sound"));
    assert!(
        verified.field("snapshots").unwrap().starts_with("1 sound, 1 compared with the log"),
        "{}",
        verified.stdout
    );

    // A folder of snapshot files alone: `snapshot verify` checks it, `verify` needs a log
    // and creates none.
    let snapshots_only = dir.path().join("snapshots-only");
    crate::support::copy_tree(&data_dir.join("snapshots"), &snapshots_only.join("snapshots"));
    printed(run(&["verify", "--data-dir", arg(&snapshots_only)])).assert_error(&["has no log"]);
    printed(run(&["snapshot", "create", "--data-dir", arg(&snapshots_only)])).assert_error(&["has no log"]);
    assert!(!snapshots_only.join("wal").exists());
    printed(run(&["snapshot", "verify", "--data-dir", arg(&snapshots_only)])).assert_success();

    // Missing data dirs are reported, never created.
    let missing = dir.path().join("missing");
    for command in [
        vec!["verify", "--data-dir", arg(&missing)],
        vec!["snapshot", "create", "--data-dir", arg(&missing)],
        vec!["snapshot", "list", "--data-dir", arg(&missing)],
        vec!["snapshot", "verify", "--data-dir", arg(&missing)],
    ] {
        printed(run(&command)).assert_error(&["does not exist"]);
    }
    assert!(!missing.exists());
    // Bad flags: usage error, exit 2.
    let usage = printed(run(&["snapshot", "create"]));
    assert_eq!(usage.status.code(), Some(2), "{}", usage.stderr);
    let usage = printed(run(&["restore", "--from", "x", "--data-dir", "y", "--to-seq", "many"]));
    assert_eq!(usage.status.code(), Some(2), "{}", usage.stderr);
    assert_eq!(usage.stderr.lines().count(), 1, "{}", usage.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_retention_drops_only_covered_log_and_the_default_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Random::new(11);
    for (name, retention, expect_log_from_one) in
        [("kept", "", true), ("retained", "snapshots_kept = 2\nwal_retention_snapshots = 1\n", false)]
    {
        let data_dir = dir.path().join(name);
        let config = crate::support::config_file(
            dir.path(),
            &format!("{name}.toml"),
            &format!("[storage]\nsnapshot_interval_seconds = 0\n{retention}"),
        );
        let mut names = Vec::new();
        let mut sent = Vec::new();
        for round in 0..3 {
            let server = serve(&data_dir, &["--config", arg(&config)]);
            let http = Http::new(server.address);
            if round == 0 {
                names = open_accounts(&http, 4).await;
            }
            sent.extend(send_transfers(&http, &names, &format!("r{round}"), 20, &mut random).await);
            server.terminate();
            printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir), "--config", arg(&config)]))
                .assert_success();
        }
        let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
        verified.assert_success();
        let log = verified.field("log").unwrap().to_owned();
        assert_eq!(log.starts_with("seq 1 to"), expect_log_from_one, "{name}: {log}");
        assert_eq!(listed(&data_dir).len(), if expect_log_from_one { 3 } else { 2 }, "{name}");
        // Every transfer is still there after a restart.
        let server = serve(&data_dir, &["--config", arg(&config)]);
        let http = Http::new(server.address);
        for transfer in &sent {
            let (status, body) = http.get(&format!("/v1/transfers/{}", transfer.id)).await;
            assert_eq!((status, body["amount"].as_str()), (StatusCode::OK, Some(cents_text(transfer.cents).as_str())));
        }
        server.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_are_taken_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = crate::support::config_file(
        dir.path(),
        "ledgerd.toml",
        "[storage]\nsnapshot_interval_seconds = 1\nsnapshots_kept = 2\n",
    );
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    let names = open_accounts(&http, 3).await;
    let mut random = Random::new(3);
    let mut sent = Vec::new();
    // Keep writing until two snapshots past the accounts exist (polling with a deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0;
    loop {
        sent.extend(send_transfers(&http, &names, &format!("p{round}"), 10, &mut random).await);
        round += 1;
        let newest = crate::support::snapshot_files(&data_dir).len();
        if newest >= 2 && round >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no periodic snapshots");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, metrics) = http.get_text("/metrics").await;
    let snapshot_seq: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ledger_snapshot_last_seq "))
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| format!("{value:.0}").parse().unwrap())
        .unwrap_or_else(|| panic!("no ledger_snapshot_last_seq in\n{metrics}"));
    assert!(snapshot_seq > u64::try_from(names.len()).unwrap(), "{snapshot_seq}");
    assert!(metrics.contains("ledger_snapshot_duration_seconds_count"), "{metrics}");
    server.terminate();
    let list = listed(&data_dir);
    assert!(list.len() <= 2, "snapshots_kept = 2: {list:?}");
    let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
    verified.assert_success();
    assert!(verified.field("snapshots").unwrap().contains("2 compared with the log"), "{}", verified.stdout);
}
