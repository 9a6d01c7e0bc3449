//! The files of `docker/` stay honest without a container engine: every path they name exists,
//! Prometheus's config and alert rules pass `promtool`, `docker compose config` (or Debian's
//! `docker-compose config`) accepts the compose file when a client is installed, the
//! container's config starts the real server, and every metric the dashboard and the alerts
//! use is one that server exposes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Http, arg, serve};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn docker_dir() -> PathBuf {
    repository().join("docker")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(docker_dir().join(name)).unwrap_or_else(|error| panic!("docker/{name}: {error}"))
}

/// The first of `candidates` that answers `probe` successfully, if any.
fn tool(candidates: &[&[&str]], probe: &str) -> Option<Vec<String>> {
    candidates.iter().find_map(|candidate| {
        let ran = Command::new(candidate[0])
            .args(&candidate[1..])
            .arg(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ran.then(|| candidate.iter().map(|part| (*part).to_owned()).collect())
    })
}

#[test]
fn every_path_the_docker_files_name_exists() {
    let compose = read("compose.yml");
    let mut mounted = 0;
    for line in compose.lines().map(str::trim) {
        // `- ./file:/in/container[:ro]`
        if let Some(mount) = line.strip_prefix("- ./") {
            let host = mount.split(':').next().unwrap();
            assert!(docker_dir().join(host).exists(), "compose.yml mounts missing docker/{host}");
            mounted += 1;
        }
    }
    assert!(mounted >= 5, "compose.yml mounts the config, Prometheus's files and Grafana's ({mounted})");
    assert!(compose.contains("context: ..") && compose.contains("dockerfile: docker/Dockerfile"));
    let dockerfile = read("Dockerfile");
    for line in dockerfile.lines() {
        if let Some(rest) = line.strip_prefix("COPY ")
            && !rest.starts_with("--from")
            && !rest.starts_with(". ")
        {
            let source = rest.split_whitespace().next().unwrap();
            assert!(repository().join(source).exists(), "Dockerfile copies missing {source}");
        }
    }
    for needle in
        ["USER ledgerd", "VOLUME", "HEALTHCHECK", "/health", "cargo build --release --locked -p api --bin ledgerd"]
    {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    assert!(read("prometheus.yml").contains("- alerts.yml") && docker_dir().join("alerts.yml").is_file());
    let provisioning = read("grafana/provisioning/dashboards/ledgerd.yml");
    assert!(provisioning.contains("/var/lib/grafana/dashboards"));
    assert!(compose.contains("./grafana/ledgerd-dashboard.json:/var/lib/grafana/dashboards/ledgerd-dashboard.json"));
}

#[test]
fn promtool_accepts_the_prometheus_config_and_the_alert_rules() {
    let Some(promtool) = tool(&[&["promtool"]], "--version") else {
        println!("NOTICE: promtool not found; skipping (apt-get install -y prometheus)");
        return;
    };
    for (what, file) in [("config", "prometheus.yml"), ("rules", "alerts.yml")] {
        let output = Command::new(&promtool[0]).args(["check", what]).arg(docker_dir().join(file)).output().unwrap();
        assert!(
            output.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The latency alerts' unit tests: quiet at a 2-core machine's few transfers per second,
    // firing on a disk whose fsync takes half a second.
    let output =
        Command::new(&promtool[0]).args(["test", "rules"]).arg(docker_dir().join("alerts_test.yml")).output().unwrap();
    assert!(
        output.status.success(),
        "promtool test rules alerts_test.yml: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_compose_client_accepts_the_compose_file() {
    let Some(compose) = tool(&[&["docker", "compose"], &["docker-compose"]], "version") else {
        println!("NOTICE: neither `docker compose` nor `docker-compose` is installed; skipping `config`");
        return;
    };
    let output = Command::new(&compose[0])
        .args(&compose[1..])
        .args(["-f"])
        .arg(docker_dir().join("compose.yml"))
        .args(["config", "--quiet"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} config: {}{}",
        compose.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ledger_*` names in `text`, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("ledger_") {
        let start = at + found;
        let preceded_by_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .map_or(text.len(), |length| start + length);
        if !preceded_by_word {
            let name = &text[start..end];
            let family =
                ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name);
            names.insert(family.to_owned());
        }
        at = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_config_serves_and_every_charted_metric_exists() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/ledgerd-dashboard.json")).unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    let charted = used.clone();
    used.extend(metric_names(&read("alerts.yml")));
    for family in [
        "ledger_transfers_total",
        "ledger_transfer_amount_total",
        "ledger_request_duration_seconds",
        "ledger_wal_commit_duration_seconds",
        "ledger_wal_batch_size",
        "ledger_accounts",
        "ledger_webhooks_total",
        "ledger_snapshot_last_seq",
        "ledger_snapshot_duration_seconds",
    ] {
        assert!(charted.contains(family), "the dashboard has no panel for {family}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = docker_dir().join("ledgerd.toml");
    let server = serve(&dir.path().join("data"), &["--config", arg(&config)]);
    let http = Http::new(server.address);
    // The container config has tokens: /v1 needs one, /metrics does not.
    let (status, _) = http.get("/v1/accounts/nobody").await;
    assert_eq!(status, hyper::StatusCode::UNAUTHORIZED);
    let admin = http.clone().with_token("dev-admin-token-change-me");
    let (status, _) = admin.get("/v1/accounts/nobody").await;
    assert_eq!(status, hyper::StatusCode::NOT_FOUND);
    // One write, so that the committer's families have samples.
    let (status, body) = admin.post("/v1/accounts", serde_json::json!({"id": "bank", "currency": "USD"})).await;
    assert_eq!(status, hyper::StatusCode::CREATED, "{body}");
    let (status, metrics) = http.get_text("/metrics").await;
    assert_eq!(status, hyper::StatusCode::OK);
    server.terminate();
    let exposed: BTreeSet<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|name| !exposed.contains(*name)).collect();
    assert!(missing.is_empty(), "used by the dashboard or alerts but not on /metrics: {missing:?}\n{metrics}");
}
