//! Damaged data dirs against the real binary: a flipped byte in a snapshot, a flipped byte in
//! a log record, a truncated last log entry, flipped bytes in the history. Each is detected (`ledgerd verify` and
//! `snapshot verify` exit 1 naming it; `serve` falls back to a sound snapshot or refuses with
//! one clear line), and none ever produces wrong balances: whatever a server starts with is
//! exactly the state of the undamaged log at some sequence.

use std::path::{Path, PathBuf};

use crate::support::{Http, arg, printed, run, serve, start_server};
use hyper::StatusCode;
use serde_json::json;

const USERS: usize = 5;
const TRANSFERS: usize = 120;

fn account_names() -> Vec<String> {
    std::iter::once("bank".to_owned()).chain((0..USERS).map(|index| format!("user-{index}"))).collect()
}

/// A data dir written by a real server (accounts, then `TRANSFERS` transfers named
/// `tr-<5 digits>`), stopped cleanly. Returns its last seq.
async fn written_data_dir(data_dir: &Path, config: &Path) -> u64 {
    let server = serve(data_dir, &["--config", arg(config)]);
    let http = Http::new(server.address);
    http.post("/v1/accounts", json!({"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"})).await;
    for index in 0..USERS {
        http.post("/v1/accounts", json!({"id": format!("user-{index}"), "currency": "USD"})).await;
    }
    let mut last_seq = 0;
    for index in 0..TRANSFERS {
        let (debit, credit) = if index % 2 == 0 {
            ("bank".to_owned(), format!("user-{}", index % USERS))
        } else {
            (format!("user-{}", (index + 3) % USERS), "bank".to_owned())
        };
        let (status, body) = http
            .post(
                "/v1/transfers",
                json!({"id": format!("tr-{index:05}"), "debit_account": debit, "credit_account": credit,
                       "amount": format!("{}.25", 1 + index % 9)}),
            )
            .await;
        match status {
            StatusCode::CREATED => last_seq = body["seq"].as_u64().unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY => {}
            other => panic!("{other}: {body}"),
        }
    }
    server.terminate();
    last_seq
}

fn no_periodic_snapshots(dir: &Path) -> PathBuf {
    crate::support::config_file(dir, "ledgerd.toml", "[storage]\nsnapshot_interval_seconds = 0\n")
}

/// The state of the undamaged copy at `seq`, as balances.
fn reference_balances(pristine: &Path, seq: u64) -> std::collections::BTreeMap<String, String> {
    let wal = snapshots::Wal::open(pristine).unwrap();
    let replayed = snapshots::replay_data_dir(pristine, &wal, Some(seq), |_| {}).unwrap();
    crate::support::ledger_balances(&replayed.ledger)
}

/// Every offset of `needle` in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack.windows(needle.len()).enumerate().filter(|(_, window)| *window == needle).map(|(at, _)| at).collect()
}

/// Whatever a damaged data dir does, it never serves wrong balances: either `serve` refuses
/// with one clear line, or what it serves is exactly the undamaged log at `verify`'s
/// `last_seq`. Returns whether it refused.
async fn refuses_or_serves_a_true_prefix(data_dir: &Path, pristine: &Path, config: &Path) -> bool {
    match start_server(data_dir, &["--config", arg(config)]) {
        Err(failure) => {
            let last = failure.stderr.lines().last().unwrap_or_default();
            assert!(!failure.status.success());
            assert!(last.starts_with("ledgerd: error: cannot recover data dir"), "{}", failure.stderr);
            assert!(!failure.stderr.contains("panicked"), "{}", failure.stderr);
            printed(run(&["verify", "--data-dir", arg(data_dir)])).assert_error(&[]);
            true
        }
        Ok(server) => {
            let http = Http::new(server.address);
            let served = crate::support::balances(&http, account_names()).await;
            server.terminate();
            let verified = printed(run(&["verify", "--data-dir", arg(data_dir)]));
            verified.assert_success();
            let seq: u64 = verified.field("last_seq").unwrap().parse().unwrap();
            assert_eq!(served, reference_balances(pristine, seq), "served balances are the undamaged state at {seq}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_snapshot_is_detected_and_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = no_periodic_snapshots(dir.path());
    // Two snapshots: one after the accounts and the first half, one at the end.
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    http.post("/v1/accounts", json!({"id": "bank", "currency": "USD", "overdraft_limit": "unlimited"})).await;
    for index in 0..USERS {
        http.post("/v1/accounts", json!({"id": format!("user-{index}"), "currency": "USD"})).await;
    }
    for index in 0..20 {
        http.post("/v1/transfers", json!({"id": format!("a-{index}"), "debit_account": "bank", "credit_account": format!("user-{}", index % USERS), "amount": "3.10"})).await;
    }
    server.terminate();
    printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)])).assert_success();
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    for index in 0..20 {
        http.post("/v1/transfers", json!({"id": format!("b-{index}"), "debit_account": format!("user-{}", index % USERS), "credit_account": "bank", "amount": "1.05"})).await;
    }
    let expected = crate::support::balances(&http, account_names()).await;
    server.terminate();
    let newest_id = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)])).stdout.trim().to_owned();
    let files = crate::support::snapshot_files(&data_dir);
    assert_eq!(files.len(), 2);
    let newest = files[1].clone();
    let good = std::fs::read(&newest).unwrap();

    // Flips in the header, the header checksum, the body's start, middle and end.
    let len = good.len();
    for at in [3, 12, 56, 60, len / 2, len - 1] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x20;
        std::fs::write(&newest, &damaged).unwrap();
        let checked = printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir)]));
        checked.assert_error(&[&newest_id]);
        assert!(checked.stdout.contains(&format!("{newest_id}  UNSOUND")), "byte {at}: {}", checked.stdout);
        assert!(checked.stdout.contains("  sound  "), "the older snapshot is still sound: {}", checked.stdout);
        printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir), "--id", &newest_id]))
            .assert_error(&[&newest_id]);
        printed(run(&["verify", "--data-dir", arg(&data_dir)])).assert_error(&[&newest_id]);
    }
    // The server starts from the older sound snapshot plus the log, says so, and shows exactly
    // the acknowledged state.
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    assert_eq!(crate::support::balances(&http, account_names()).await, expected);
    let log = server.terminate();
    assert!(log.contains("not sound"), "recovery reports the damaged snapshot:\n{log}");

    // With the log's beginning gone (retention) and every snapshot damaged, it refuses.
    std::fs::write(&newest, &good).unwrap();
    let retention = crate::support::config_file(
        dir.path(),
        "retention.toml",
        "[storage]\nsnapshots_kept = 1\nwal_retention_snapshots = 1\n",
    );
    let server = serve(&data_dir, &["--config", arg(&retention)]);
    let http = Http::new(server.address);
    http.post(
        "/v1/transfers",
        json!({"id": "c-0", "debit_account": "bank", "credit_account": "user-0", "amount": "1"}),
    )
    .await;
    server.terminate();
    printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir), "--config", arg(&retention)])).assert_success();
    let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
    assert!(!verified.assert_success().field("log").unwrap().starts_with("seq 1 "), "{}", verified.stdout);
    let only = crate::support::snapshot_files(&data_dir);
    assert_eq!(only.len(), 1);
    let mut damaged = std::fs::read(&only[0]).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&only[0], &damaged).unwrap();
    let failure = start_server(&data_dir, &["--config", arg(&config)]).err().expect("serve must refuse");
    let last = failure.stderr.lines().last().unwrap();
    assert!(last.starts_with("ledgerd: error: cannot recover data dir") && last.contains("refusing"), "{last}");
    let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
    verified.assert_error(&["is corrupt"]);
    assert!(verified.stdout.contains("no sound snapshot reaches"), "{}", verified.stdout);
    assert!(verified.stdout.contains("result: NOT SOUND"), "{}", verified.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_log_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = no_periodic_snapshots(dir.path());
    let last_seq = written_data_dir(&data_dir, &config).await;
    let pristine = dir.path().join("pristine");
    crate::support::copy_tree(&data_dir, &pristine);

    // Damage every stored copy of one record in the middle of the log (sled may hold a value
    // both in its update and in a consolidated node).
    let db = data_dir.join("wal").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = format!("tr-{:05}", TRANSFERS / 2);
    let found = occurrences(&bytes, needle.as_bytes());
    assert!(!found.is_empty(), "{needle} not found in sled's file");
    for at in &found {
        bytes[at + needle.len() - 1] ^= 0x01;
    }
    std::fs::write(&db, &bytes).unwrap();
    println!("flipped one byte in {} stored copies of {needle}", found.len());

    // With the high-water mark of the clean stop, the damage is always detected.
    assert!(
        refuses_or_serves_a_true_prefix(&data_dir, &pristine, &config).await,
        "a log shorter than its mark was served"
    );
    let failure = start_server(&data_dir, &["--config", arg(&config)]).err().unwrap();
    println!("serve refused: {}", failure.stderr.lines().last().unwrap());

    // Without the mark (as after a crash before it was written) the damage cannot always be
    // told from a torn tail, but the balances served are never wrong.
    std::fs::remove_file(data_dir.join("LOG_WATERMARK")).unwrap();
    let refused = refuses_or_serves_a_true_prefix(&data_dir, &pristine, &config).await;
    println!("without the mark: {}", if refused { "refused" } else { "served a true prefix" });
    let _ = last_seq;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_last_log_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = no_periodic_snapshots(dir.path());
    let last_seq = written_data_dir(&data_dir, &config).await;
    let pristine = dir.path().join("pristine");
    crate::support::copy_tree(&data_dir, &pristine);

    // Cut sled's file in the middle of the last stored copy of the last transfer.
    let db = data_dir.join("wal").join("db");
    let bytes = std::fs::read(&db).unwrap();
    let last_transfer = (0..TRANSFERS)
        .rev()
        .map(|index| format!("tr-{index:05}"))
        .find(|needle| !occurrences(&bytes, needle.as_bytes()).is_empty())
        .unwrap();
    let cut = *occurrences(&bytes, last_transfer.as_bytes()).last().unwrap() + 2;
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(u64::try_from(cut).unwrap()).unwrap();
    println!("cut {} of {} bytes, inside {last_transfer}", bytes.len() - cut, bytes.len());

    assert!(refuses_or_serves_a_true_prefix(&data_dir, &pristine, &config).await, "a truncated log was served");
    let failure = start_server(&data_dir, &["--config", arg(&config)]).err().unwrap();
    let message = failure.stderr.lines().last().unwrap().to_owned();
    println!("serve refused: {message}");

    // Without the mark it is indistinguishable from a crash before the acknowledgement: a
    // true prefix is served (RUNBOOK.md says so).
    std::fs::remove_file(data_dir.join("LOG_WATERMARK")).unwrap();
    let refused = refuses_or_serves_a_true_prefix(&data_dir, &pristine, &config).await;
    println!("without the mark: {}", if refused { "refused" } else { "served a true prefix" });
    let _ = last_seq;
}

/// Every transfer of [`written_data_dir`] as a server on `data_dir` answers it: (status, body).
async fn transfers_served(http: &Http) -> Vec<(StatusCode, serde_json::Value)> {
    let mut answers = Vec::with_capacity(TRANSFERS);
    for index in 0..TRANSFERS {
        answers.push(http.get(&format!("/v1/transfers/tr-{index:05}")).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_the_history_is_named_never_answered_wrongly_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = no_periodic_snapshots(dir.path());
    written_data_dir(&data_dir, &config).await;
    let pristine = dir.path().join("pristine");
    crate::support::copy_tree(&data_dir, &pristine);
    let server = serve(&pristine, &["--config", arg(&config)]);
    let expected = transfers_served(&Http::new(server.address)).await;
    server.terminate();
    assert!(expected.iter().filter(|(status, _)| *status == StatusCode::OK).count() > TRANSFERS / 2);

    // A flipped byte in one stored transfer record: found when that record is read.
    let records = data_dir.join("history").join("transfers.dat");
    let mut bytes = std::fs::read(&records).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&records, &bytes).unwrap();
    let verified = printed(run(&["verify", "--data-dir", arg(&data_dir)]));
    verified.assert_error(&[]);
    assert!(
        verified.stdout.contains("transfers.dat") || verified.stderr.contains("transfers.dat"),
        "verify names the damaged file:\n{}\n{}",
        verified.stdout,
        verified.stderr
    );

    let server = serve(&data_dir, &["--config", arg(&config)]);
    let served = transfers_served(&Http::new(server.address)).await;
    server.terminate();
    let mut unavailable = 0;
    for (index, (answer, expected)) in served.iter().zip(&expected).enumerate() {
        if answer.0 == StatusCode::SERVICE_UNAVAILABLE {
            // The damaged record: an error, never another transfer or a 404.
            assert_eq!(answer.1["error"]["code"], "unavailable", "tr-{index:05}: {}", answer.1);
            unavailable += 1;
        } else {
            assert_eq!(answer, expected, "tr-{index:05}");
        }
    }
    assert_eq!(unavailable, 1, "exactly the damaged transfer is refused");

    // Damage found when the history is opened (its manifest): recovery moves it aside and
    // derives it again from the whole log; every transfer reads as before.
    let manifest = data_dir.join("history").join("MANIFEST");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[4] ^= 0x01;
    std::fs::write(&manifest, &bytes).unwrap();
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let served = transfers_served(&Http::new(server.address)).await;
    let log = server.terminate();
    assert_eq!(served, expected, "the rebuilt history answers as the undamaged one");
    assert!(log.contains("rebuilding it from the log"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("history.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged history is kept aside for inspection");
    printed(run(&["verify", "--data-dir", arg(&data_dir)])).assert_success();
}
