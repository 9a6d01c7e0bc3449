//! `ledgerd bench` against a real `ledgerd serve` on `127.0.0.1:0`: short runs (a couple of
//! seconds, or a fixed count) of single transfers, batches, a hot set and `GET /health`, each
//! checked through its `--json` report (counts, percentiles, the balance check); two runs on
//! one server do not collide; an unreachable target and bad flags fail with one line.

mod process;

use std::io::Read;
use std::process::{Command, Output, Stdio};

use process::{Spawned, spawn_listening};

use serde_json::Value;

fn ledgerd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledgerd"));
    command.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG").env_remove("LEDGERD_BENCH_TOKEN");
    command
}

/// A running `ledgerd serve` on a temporary data dir; killed on drop.
struct Server {
    spawned: Spawned,
    _data_dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = ledgerd();
        command.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(data_dir.path());
        let spawned = spawn_listening(command).unwrap_or_else(|exited| panic!("ledgerd serve exited: {exited:?}"));
        Server { spawned, _data_dir: data_dir }
    }

    fn target(&self) -> String {
        format!("http://{}", self.spawned.address)
    }

    /// Runs `ledgerd bench --target THIS ARGS... --json`; returns the report and stderr.
    fn bench(&self, arguments: &[&str]) -> (Value, String) {
        let output =
            ledgerd().arg("bench").arg("--target").arg(self.target()).args(arguments).arg("--json").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "bench failed: {:?}\nstderr: {stderr}", output.status);
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "--json prints one line: {stdout}");
        (serde_json::from_str(&stdout).unwrap(), stderr)
    }
}

fn number(report: &Value, pointer: &str) -> f64 {
    report.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} missing in {report}"))
}

fn count(report: &Value, pointer: &str) -> u64 {
    report.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{pointer} missing in {report}"))
}

#[track_caller]
fn assert_balanced(report: &Value, accounts: u64) {
    assert_eq!(report["balance"]["passed"], true, "{report}");
    assert_eq!(report["balance"]["sum_of_balances"], "0", "{report}");
    assert_eq!(count(report, "/balance/accounts_over_limit"), 0);
    assert_eq!(count(report, "/balance/accounts_checked"), accounts + 1, "every account and the funding account");
    assert_eq!(report["balance"]["moved_as_acknowledged"], true, "{report}");
}

#[test]
fn a_timed_run_of_single_transfers_reports_and_balances() {
    let server = Server::start();
    let (report, stderr) = server.bench(&["--accounts", "40", "--duration", "2", "--connections", "4", "--seed", "1"]);
    assert_eq!(report["system"], "ledgerd");
    assert_eq!(report["batch"], 1);
    let created = count(&report, "/results/created");
    assert!(created > 0, "{report}");
    assert_eq!(count(&report, "/transfers_created"), created);
    // Every request was answered: each is one transfer, counted under one result.
    let results: u64 = report["results"].as_object().unwrap().values().map(|value| value.as_u64().unwrap()).sum();
    assert_eq!(results, count(&report, "/requests"));
    assert_eq!(count(&report, "/latency_ms/samples"), count(&report, "/requests"));
    let elapsed = number(&report, "/elapsed_seconds");
    assert!((2.0..10.0).contains(&elapsed), "{elapsed}");
    let throughput = number(&report, "/throughput_transfers_per_second");
    assert!((throughput - created as f64 / elapsed).abs() < 1.0, "{report}");
    let (p50, p99, p999, max) = (
        number(&report, "/latency_ms/p50"),
        number(&report, "/latency_ms/p99"),
        number(&report, "/latency_ms/p999"),
        number(&report, "/latency_ms/max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max * 1.001, "{report}");
    assert_balanced(&report, 40);
    // The progress line, once a second, on stderr.
    assert!(stderr.lines().any(|line| line.starts_with("[   1 s]") && line.contains("transfers/s")), "{stderr}");
}

#[test]
fn counted_batched_runs_send_exactly_the_count_and_do_not_collide() {
    let server = Server::start();
    let arguments = ["--accounts", "30", "--batch", "25", "--count", "500", "--connections", "3", "--no-progress"];
    let (first, stderr) = server.bench(&[&arguments[..], &["--seed", "7"]].concat());
    assert!(stderr.is_empty(), "--no-progress: {stderr}");
    assert_eq!(count(&first, "/requests"), 20);
    assert_eq!(count(&first, "/results/created"), 500, "funds are ample, ids unique: {first}");
    assert_balanced(&first, 30);
    // A second run on the same server, a hot set of 2 this time: its own ids, its own check.
    let (second, _) = server.bench(&[&arguments[..], &["--seed", "8", "--hot-accounts", "2"]].concat());
    assert_ne!(first["run_id"], second["run_id"]);
    assert_eq!(count(&second, "/results/created"), 500, "{second}");
    assert_eq!(second["hot_accounts"], 2);
    assert_balanced(&second, 30);
    // The same seed over one connection: the same run id, the same transfer ids with the same
    // fields, so every transfer of the second run is an identical replay; the check holds.
    let one_connection =
        ["--accounts", "10", "--batch", "5", "--count", "50", "--connections", "1", "--no-progress", "--seed", "11"];
    let (original, _) = server.bench(&one_connection);
    assert_eq!(count(&original, "/results/created"), 50, "{original}");
    let (replayed, _) = server.bench(&one_connection);
    assert_eq!(replayed["run_id"], original["run_id"]);
    assert_eq!(count(&replayed, "/results/exists"), 50, "{replayed}");
    assert_eq!(count(&replayed, "/transfers_created"), 0);
    assert_balanced(&replayed, 10);
}

#[test]
fn atomic_batches_and_the_health_workload() {
    let server = Server::start();
    let (atomic, _) = server.bench(&[
        "--accounts",
        "20",
        "--batch",
        "10",
        "--atomic",
        "--count",
        "200",
        "--connections",
        "2",
        "--no-progress",
    ]);
    assert_eq!(atomic["atomic"], true);
    assert_eq!(count(&atomic, "/results/created"), 200);
    assert_balanced(&atomic, 20);
    let (health, _) = server.bench(&["--workload", "health", "--count", "300", "--connections", "3", "--no-progress"]);
    assert_eq!(health["workload"], "health");
    assert_eq!(count(&health, "/results/ok"), 300);
    assert_eq!(count(&health, "/requests"), 300);
    assert!(health["balance"].is_null());
    assert!(number(&health, "/requests_per_second") > 0.0);
}

fn one_line_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&output.stdout));
    stderr
}

#[test]
fn an_unreachable_target_fails_with_one_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let output =
        ledgerd().args(["bench", "--target", &format!("http://{address}"), "--duration", "1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = one_line_failure(&output);
    assert!(stderr.starts_with("ledgerd: error: cannot reach"), "{stderr}");
    assert!(stderr.contains(&address.to_string()), "{stderr}");
}

#[test]
fn bad_flags_fail_with_one_line() {
    for (arguments, code, needle) in [
        (&["bench", "--accounts", "1"][..], 1, "--accounts"),
        (&["bench", "--target", "https://127.0.0.1:1"], 1, "http://"),
        (&["bench", "--batch", "nope"], 2, "--batch"),
        (&["bench", "--count", "5", "--duration", "5"], 2, "--count"),
    ] {
        let output = ledgerd().args(arguments).output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{arguments:?}");
        let stderr = one_line_failure(&output);
        assert!(stderr.contains(needle), "{arguments:?}: {stderr}");
    }
    let mut child = ledgerd().args(["bench", "--help"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut help = String::new();
    child.stdout.take().unwrap().read_to_string(&mut help).unwrap();
    assert!(child.wait().unwrap().success());
    for flag in [
        "--target",
        "--accounts",
        "--duration",
        "--connections",
        "--batch",
        "--token",
        "--json",
        "--count",
        "--hot-accounts",
        "--seed",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
