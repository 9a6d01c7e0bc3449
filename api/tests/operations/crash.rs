//! Crash safety of the real `ledgerd serve`: SIGKILL at random moments under concurrent HTTP
//! load (single transfers, batches in order and atomic, holds posted and voided), restart, and
//! check that every acknowledged write is there with its amount and status, that every
//! balance equals the transfers the server lists for the account, that every currency sums
//! to zero, and that `ledgerd verify` passes. Also SIGKILL during a snapshot write, of the
//! server's periodic snapshot and of `ledgerd snapshot create`.
//!
//! `CRASH_SEED` repeats a run; `CRASH_ROUNDS` sets the number of kills (default 4). The soak
//! (`cargo test --release -p api --test operations crash:: -- --ignored`) runs 40 rounds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Http, Random, arg, printed, run, serve};
use hyper::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// USD accounts (`usd-bank` unlimited) and EUR accounts (`eur-bank` unlimited).
const USD_USERS: usize = 10;
const EUR_USERS: usize = 4;
const CLIENTS: u64 = 6;

fn accounts() -> Vec<(String, &'static str)> {
    let mut accounts = vec![("usd-bank".to_owned(), "USD"), ("eur-bank".to_owned(), "EUR")];
    accounts.extend((0..USD_USERS).map(|index| (format!("usd-{index}"), "USD")));
    accounts.extend((0..EUR_USERS).map(|index| (format!("eur-{index}"), "EUR")));
    accounts
}

/// What the clients know was acknowledged.
#[derive(Debug, Clone)]
struct Acknowledged {
    amount: Decimal,
    debit: String,
    credit: String,
    pending: bool,
    /// The post or void of this hold that was acknowledged, with the posted amount.
    settled: Option<(&'static str, Decimal)>,
    /// A post or void of this hold was sent (its answer may have been lost to the kill).
    settle_sent: bool,
}

type Ledger = Arc<Mutex<HashMap<String, Acknowledged>>>;

fn amount_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A random pair of distinct accounts of one currency, the bank debited a third of the time.
fn pair(random: &mut Random) -> (String, String) {
    let (prefix, users) = if random.below(4) == 0 { ("eur", EUR_USERS) } else { ("usd", USD_USERS) };
    let user = |random: &mut Random| format!("{prefix}-{}", random.index(users));
    let debit = if random.below(3) == 0 { format!("{prefix}-bank") } else { user(random) };
    loop {
        let credit = if random.below(5) == 0 { format!("{prefix}-bank") } else { user(random) };
        if credit != debit {
            return (debit, credit);
        }
    }
}

fn transfer_body(id: &str, random: &mut Random, pending: bool) -> Value {
    let (debit, credit) = pair(random);
    json!({"id": id, "debit_account": debit, "credit_account": credit,
           "amount": amount_text(1 + random.below(3_000)), "pending": pending})
}

fn record_created(transfer: &Value) -> (String, Acknowledged) {
    let amount: Decimal = transfer["amount"].as_str().unwrap().parse().unwrap();
    (
        transfer["id"].as_str().unwrap().to_owned(),
        Acknowledged {
            amount,
            debit: transfer["debit_account"].as_str().unwrap().to_owned(),
            credit: transfer["credit_account"].as_str().unwrap().to_owned(),
            pending: transfer["status"] == "pending",
            settled: None,
            settle_sent: false,
        },
    )
}

/// One client: random writes until `stop`, recording every acknowledgement. Transport errors
/// (the server was killed) end the client.
async fn client(http: Http, prefix: String, seed: u64, stop: Arc<AtomicBool>, acknowledged: Ledger) {
    let mut random = Random::new(seed);
    let mut holds: Vec<String> = Vec::new();
    let mut step = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let choice = random.below(100);
        let outcome = if choice < 50 {
            let id = format!("{prefix}-{step}");
            let pending = random.below(6) == 0;
            match http.try_send(Method::POST, "/v1/transfers", Some(&transfer_body(&id, &mut random, pending))).await {
                Ok((StatusCode::CREATED, transfer)) => {
                    let (id, ack) = record_created(&transfer);
                    if ack.pending {
                        holds.push(id.clone());
                    }
                    acknowledged.lock().await.insert(id, ack);
                    Ok(())
                }
                Ok((status, body)) => check_refusal(status, &body),
                Err(error) => Err(error),
            }
        } else if choice < 85 {
            let size = 1 + random.below(40);
            let atomic = random.below(3) == 0;
            let items: Vec<Value> =
                (0..size).map(|item| transfer_body(&format!("{prefix}-{step}-{item}"), &mut random, false)).collect();
            let body = json!({"transfers": items, "atomic": atomic});
            match http.try_send(Method::POST, "/v1/transfers/batch", Some(&body)).await {
                Ok((StatusCode::OK, answer)) => {
                    let results = answer["results"].as_array().unwrap();
                    assert_eq!(results.len(), items.len());
                    let created: Vec<_> = results.iter().filter(|result| result["status"] == "created").collect();
                    if atomic {
                        assert!(created.is_empty() || created.len() == results.len(), "atomic batch half applied");
                    }
                    let mut map = acknowledged.lock().await;
                    for result in created {
                        let (id, ack) = record_created(&result["transfer"]);
                        map.insert(id, ack);
                    }
                    Ok(())
                }
                Ok((status, body)) => check_refusal(status, &body),
                Err(error) => Err(error),
            }
        } else if let Some(hold) = (!holds.is_empty()).then(|| holds.swap_remove(random.index(holds.len()))) {
            let post = random.below(2) == 0;
            let route = format!("/v1/transfers/{hold}/{}", if post { "post" } else { "void" });
            acknowledged.lock().await.get_mut(&hold).unwrap().settle_sent = true;
            match http.try_send(Method::POST, &route, None).await {
                Ok((StatusCode::OK, transfer)) => {
                    let status = if post { "posted" } else { "voided" };
                    assert_eq!(transfer["status"], status, "{transfer}");
                    let posted: Decimal = transfer["posted_amount"].as_str().unwrap().parse().unwrap();
                    acknowledged.lock().await.get_mut(&hold).unwrap().settled = Some((status, posted));
                    Ok(())
                }
                Ok((status, body)) => check_refusal(status, &body),
                Err(error) => Err(error),
            }
        } else {
            Ok(())
        };
        if outcome.is_err() {
            return;
        }
    }
}

/// A refusal the load can cause; anything else fails the test.
fn check_refusal(status: StatusCode, body: &Value) -> Result<(), String> {
    let code = body["error"]["code"].as_str().unwrap_or_default();
    match (status, code) {
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds" | "account_frozen")
        | (StatusCode::SERVICE_UNAVAILABLE, _)
        | (StatusCode::CONFLICT, "pending_transfer_expired") => Ok(()),
        _ => panic!("unexpected answer {status}: {body}"),
    }
}

/// Opens the accounts (idempotent: on later rounds they exist).
async fn open_accounts(http: &Http) {
    for (name, currency) in accounts() {
        let overdraft = if name.ends_with("-bank") { "unlimited" } else { "0" };
        let (status, body) =
            http.post("/v1/accounts", json!({"id": name, "currency": currency, "overdraft_limit": overdraft})).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "{status}: {body}");
    }
}

/// Every acknowledged write is there, with its amount and status.
async fn check_acknowledged(http: &Http, acknowledged: &HashMap<String, Acknowledged>, round: u64, seed: u64) {
    let entries: Vec<(String, Acknowledged)> = acknowledged.iter().map(|(id, ack)| (id.clone(), ack.clone())).collect();
    let chunks: Vec<Vec<(String, Acknowledged)>> =
        entries.chunks(entries.len().div_ceil(8).max(1)).map(<[_]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            for (id, ack) in chunk {
                let (status, transfer) = http.get(&format!("/v1/transfers/{id}")).await;
                assert_eq!(status, StatusCode::OK, "round {round}, seed {seed}: acknowledged {id} lost: {transfer}");
                let amount: Decimal = transfer["amount"].as_str().unwrap().parse().unwrap();
                assert_eq!(amount, ack.amount, "{id}");
                assert_eq!(
                    (transfer["debit_account"].as_str(), transfer["credit_account"].as_str()),
                    (Some(ack.debit.as_str()), Some(ack.credit.as_str()))
                );
                let status = transfer["status"].as_str().unwrap();
                match (ack.pending, ack.settled, ack.settle_sent) {
                    (false, _, _) => assert_eq!(status, "posted", "{id}"),
                    (true, Some((settled, posted)), _) => {
                        assert_eq!(status, settled, "{id}: acknowledged {settled} lost");
                        let stored: Decimal = transfer["posted_amount"].as_str().unwrap().parse().unwrap();
                        assert_eq!(stored, posted, "{id}");
                    }
                    (true, None, true) => assert!(["pending", "posted", "voided"].contains(&status), "{id}: {status}"),
                    (true, None, false) => assert_eq!(status, "pending", "{id}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Every balance equals the transfers the server lists for the account; holds equal the open
/// pending transfers; each currency sums to zero; no user is below zero.
async fn check_balances(http: &Http) -> BTreeMap<String, String> {
    let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut balances = BTreeMap::new();
    for (name, currency) in accounts() {
        let (status, account) = http.get(&format!("/v1/accounts/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{account}");
        let decimal = |field: &str| account[field].as_str().unwrap().parse::<Decimal>().unwrap();
        let (balance, pending_debits, pending_credits) =
            (decimal("balance"), decimal("pending_debits"), decimal("pending_credits"));
        let mut from_history = Decimal::ZERO;
        let (mut held_out, mut held_in) = (Decimal::ZERO, Decimal::ZERO);
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/v1/accounts/{name}/transfers?limit=1000&before={cursor}"),
                None => format!("/v1/accounts/{name}/transfers?limit=1000"),
            };
            let (status, page) = http.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for transfer in page["transfers"].as_array().unwrap() {
                let amount: Decimal = transfer["amount"].as_str().unwrap().parse().unwrap();
                let posted: Decimal = transfer["posted_amount"].as_str().unwrap().parse().unwrap();
                let outgoing = transfer["debit_account"] == name.as_str();
                match transfer["status"].as_str().unwrap() {
                    "posted" => from_history += if outgoing { -posted } else { posted },
                    "pending" if outgoing => held_out += amount,
                    "pending" => held_in += amount,
                    _ => {}
                }
            }
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(balance, from_history, "{name}: balance vs its transfers");
        assert_eq!((pending_debits, pending_credits), (held_out, held_in), "{name}: holds vs its pending transfers");
        if !name.ends_with("-bank") {
            assert!(balance - pending_debits >= Decimal::ZERO, "{name} overdrawn: {account}");
        }
        *sums.entry(currency).or_default() += balance;
        balances.insert(name, account["balance"].as_str().unwrap().to_owned());
    }
    for (currency, sum) in sums {
        assert!(sum.is_zero(), "{currency} balances sum to {sum}");
    }
    balances
}

/// `ledgerd verify` passes and agrees with what the server showed.
fn check_verify(data_dir: &Path, acknowledged: usize) -> u64 {
    let verified = printed(run(&["verify", "--data-dir", arg(data_dir)]));
    verified.assert_success();
    assert_eq!(verified.field("result"), Some("sound"));
    let transfers: usize = verified.field("transfers").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(transfers >= acknowledged, "verify counts {transfers} transfers, {acknowledged} were acknowledged");
    verified.field("last_seq").unwrap().parse().unwrap()
}

async fn crash_rounds(rounds: u64) {
    let seed = crate::support::seed("CRASH_SEED");
    let mut random = Random::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = crate::support::config_file(
        dir.path(),
        "ledgerd.toml",
        "[storage]\nsnapshot_interval_seconds = 1\nsnapshots_kept = 2\n",
    );
    let config_args = ["--config", arg(&config)];
    let acknowledged: Ledger = Arc::new(Mutex::new(HashMap::new()));
    let mut last_seq = 0;
    for round in 0..rounds {
        let server = serve(&data_dir, &config_args);
        let http = Http::new(server.address);
        if round == 0 {
            open_accounts(&http).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client_index| {
                tokio::spawn(client(
                    http.clone(),
                    format!("r{round}-c{client_index}"),
                    random.next_u64(),
                    stop.clone(),
                    acknowledged.clone(),
                ))
            })
            .collect();
        // Some rounds cross a periodic snapshot (every second).
        let run_for = Duration::from_millis(100 + random.below(if round % 3 == 2 { 1_800 } else { 700 }));
        tokio::time::sleep(run_for).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }

        let server = serve(&data_dir, &config_args);
        let http = Http::new(server.address);
        crate::support::wait_until_serving(&http, "/v1/accounts/usd-bank").await;
        let map = acknowledged.lock().await.clone();
        check_acknowledged(&http, &map, round, seed).await;
        check_balances(&http).await;
        // Alternate a clean stop and another SIGKILL before the offline check.
        if round % 2 == 0 {
            server.terminate();
        } else {
            server.kill();
        }
        let verified_seq = check_verify(&data_dir, map.len());
        assert!(verified_seq >= last_seq, "the log went back from {last_seq} to {verified_seq}");
        last_seq = verified_seq;
        println!(
            "round {round}: killed after {run_for:?}; {} acknowledged so far, all present; last_seq {last_seq}",
            map.len()
        );
    }
    let total = acknowledged.lock().await.len();
    assert!(total > 100, "the load made progress ({total} acknowledged)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_under_http_load() {
    let rounds = std::env::var("CRASH_ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(4);
    crash_rounds(rounds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 40 SIGKILL rounds; run by hand"]
async fn soak_acknowledged_writes_survive_many_sigkills() {
    crash_rounds(40).await;
}

/// A data dir big enough that writing its snapshot takes a while.
/// Transfers in [`big_data_dir`].
const BIG_TRANSFERS: usize = 150_000;

fn big_data_dir(data_dir: &Path) -> engine::Ledger {
    let records = crate::support::bank_records(20_000, BIG_TRANSFERS, 5);
    crate::support::write_log(data_dir, &records, 10_000);
    crate::support::ledger_of(&records, records.len())
}

/// Polls (with a deadline) until a temporary snapshot file exists in `data_dir`, or the
/// process ends. Returns whether one was seen.
fn wait_for_snapshot_write(data_dir: &Path, child: &mut std::process::Child, deadline: Duration) -> bool {
    let snapshots = data_dir.join("snapshots");
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if let Ok(entries) = std::fs::read_dir(&snapshots)
            && entries.filter_map(Result::ok).any(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

fn tmp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("snapshots"))
        .map(|entries| {
            entries.filter_map(Result::ok).filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp")).count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_snapshot_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let expected = big_data_dir(&data_dir);
    let expected_balances = crate::support::ledger_balances(&expected);

    // 1. `ledgerd snapshot create`, killed while it writes the file.
    let mut caught = false;
    for _attempt in 0..5 {
        let mut child = crate::support::ledgerd()
            .args(["snapshot", "create", "--data-dir", arg(&data_dir)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let seen = wait_for_snapshot_write(&data_dir, &mut child, Duration::from_secs(120));
        let _ = child.kill();
        child.wait().unwrap();
        // Killed mid-write unless it managed to finish (rename) in the meantime.
        caught = seen && crate::support::snapshot_files(&data_dir).is_empty();
        if caught {
            break;
        }
        // It finished first: start over without its snapshot.
        for file in crate::support::snapshot_files(&data_dir) {
            std::fs::remove_file(file).unwrap();
        }
    }
    assert!(caught, "never caught `snapshot create` writing its file");
    assert_eq!(tmp_files(&data_dir), 1, "the killed write left its temporary file");
    assert!(crate::support::snapshot_files(&data_dir).is_empty(), "no half-written file under a final name");
    let list = printed(run(&["snapshot", "list", "--data-dir", arg(&data_dir), "--json"]));
    assert_eq!(list.assert_success().stdout.trim(), "[]");
    let verified = check_verify(&data_dir, BIG_TRANSFERS);
    assert_eq!(verified, expected.last_seq);

    // 2. The server's periodic snapshot, killed while it writes the file.
    let config = crate::support::config_file(dir.path(), "ledgerd.toml", "[storage]\nsnapshot_interval_seconds = 1\n");
    let mut server = serve(&data_dir, &["--config", arg(&config)]);
    let before = tmp_files(&data_dir);
    // The leftover temporary file has the same name as the one the server writes; wait for
    // a fresh one by removing it first.
    if before > 0 {
        for entry in std::fs::read_dir(data_dir.join("snapshots")).unwrap().filter_map(Result::ok) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let caught = wait_for_snapshot_write(&data_dir, server.child(), Duration::from_secs(120));
    server.kill();
    if !caught {
        println!("NOTICE: the periodic snapshot finished before it could be caught writing");
    }
    let server = serve(&data_dir, &["--config", arg(&config)]);
    let http = Http::new(server.address);
    crate::support::wait_until_serving(&http, "/v1/accounts/acct-0").await;
    let sample: Vec<String> = expected_balances.keys().step_by(97).cloned().collect();
    let actual = crate::support::balances(&http, sample.iter().cloned()).await;
    for name in &sample {
        assert_eq!(actual[name], expected_balances[name], "{name}");
    }
    let (status, transfer) = http.get("/v1/transfers/xfer-00149999").await;
    assert_eq!(status, StatusCode::OK, "{transfer}");
    server.terminate();
    assert_eq!(check_verify(&data_dir, BIG_TRANSFERS), expected.last_seq);

    // 3. A later snapshot completes and replaces the leftover.
    let created = printed(run(&["snapshot", "create", "--data-dir", arg(&data_dir)]));
    created.assert_success();
    assert_eq!(created.stdout.trim(), format!("snap-{:020}", expected.last_seq));
    assert_eq!(tmp_files(&data_dir), 0);
    printed(run(&["snapshot", "verify", "--data-dir", arg(&data_dir)])).assert_success();
}
