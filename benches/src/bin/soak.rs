//! The storage soak: a real `ledgerd serve` under `ledgerd bench` at full rate for minutes, its
//! resident memory and its stored-transfer count sampled every few seconds, and a chart of both.
//!
//! `soak [--ledgerd PATH] [--duration-seconds 600] [--sample-seconds 5] [--warm-up-seconds 60]
//! [--accounts 10000] [--connections 4] [--batch 1000] [--generator-threads 1] [--output-dir DIR]`
//! (defaults as shown; `--ledgerd` defaults to `target/release/ledgerd`, `--output-dir` to
//! `target/soak`). It starts the server on a fresh data dir under the output dir, with
//! snapshots every 60 s as in production, waits for `listening on ADDR`, starts the load
//! generator against it, and every sample interval reads the server's `VmRSS` from
//! `/proc/PID/status` and `ledger_transfers_total{result="created"}` from `/metrics`. It writes
//! `samples.jsonl` (one object per sample), `soak.svg` (resident memory and transfers/s over
//! time) and prints the figures the storage budget names: resident growth per stored transfer
//! after the warm-up, peak resident memory, and the throughput of the last minute against the
//! first.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use plotters::prelude::*;
use serde::Serialize;

/// The most a sample interval or a run may be, so a typo cannot start a week-long run.
const DURATION_SECONDS_MAX: u64 = 86_400;
/// How long the server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    ledgerd: PathBuf,
    duration_seconds: u64,
    sample_seconds: u64,
    warm_up_seconds: u64,
    accounts: u64,
    connections: usize,
    batch: usize,
    generator_threads: usize,
    output_dir: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        ledgerd: PathBuf::from("target/release/ledgerd"),
        duration_seconds: 600,
        sample_seconds: 5,
        warm_up_seconds: 60,
        accounts: 10_000,
        connections: 4,
        batch: 1_000,
        generator_threads: 1,
        output_dir: PathBuf::from("target/soak"),
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ledgerd" => options.ledgerd = PathBuf::from(value()?),
            "--duration-seconds" => options.duration_seconds = value()?.parse().context("--duration-seconds")?,
            "--sample-seconds" => options.sample_seconds = value()?.parse().context("--sample-seconds")?,
            "--warm-up-seconds" => options.warm_up_seconds = value()?.parse().context("--warm-up-seconds")?,
            "--accounts" => options.accounts = value()?.parse().context("--accounts")?,
            "--connections" => options.connections = value()?.parse().context("--connections")?,
            "--batch" => options.batch = value()?.parse().context("--batch")?,
            "--generator-threads" => options.generator_threads = value()?.parse().context("--generator-threads")?,
            "--output-dir" => options.output_dir = PathBuf::from(value()?),
            other => bail!("unknown flag {other}; see the module documentation"),
        }
    }
    ensure!(
        (1..=DURATION_SECONDS_MAX).contains(&options.duration_seconds),
        "--duration-seconds must be 1..={DURATION_SECONDS_MAX}"
    );
    ensure!(
        options.sample_seconds >= 1 && options.sample_seconds <= options.duration_seconds,
        "--sample-seconds must be at least 1 and at most --duration-seconds"
    );
    ensure!(options.warm_up_seconds < options.duration_seconds, "--warm-up-seconds must be below --duration-seconds");
    Ok(options)
}

/// One reading of the server.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    elapsed_seconds: f64,
    resident_bytes: u64,
    transfers_created: u64,
    /// Transfers created per second since the previous sample.
    transfers_per_second: f64,
}

/// Kills the child when dropped, so that an error never leaves a server behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let data_dir = options.output_dir.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&options.output_dir)?;
    let config = options.output_dir.join("ledgerd.toml");
    std::fs::write(&config, "[storage]\nsnapshot_interval_seconds = 60\n")?;

    let server_log = std::fs::File::create(options.output_dir.join("server.log"))?;
    let mut server = ChildGuard(
        Command::new(&options.ledgerd)
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .stderr(server_log)
            .spawn()
            .with_context(|| format!("starting {}", options.ledgerd.display()))?,
    );
    let address = wait_for_listening(&mut server.0)?;
    let server_pid = server.0.id();
    println!("soak: server {server_pid} listening on {address}; data dir {}", data_dir.display());

    let bench_log = std::fs::File::create(options.output_dir.join("bench.json"))?;
    let mut bench = ChildGuard(
        Command::new(&options.ledgerd)
            .arg("bench")
            .arg("--target")
            .arg(format!("http://{address}"))
            .args(["--accounts", &options.accounts.to_string()])
            .args(["--connections", &options.connections.to_string()])
            .args(["--batch", &options.batch.to_string()])
            .args(["--threads", &options.generator_threads.to_string()])
            .args(["--duration", &options.duration_seconds.to_string()])
            .args(["--skip-balance-check", "--no-progress", "--json"])
            .stdout(bench_log)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the load generator")?,
    );

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let samples_path = options.output_dir.join("samples.jsonl");
    let mut samples_file = std::fs::File::create(&samples_path)?;
    let interval = Duration::from_secs(options.sample_seconds);
    let mut next_sample = started;
    loop {
        if let Some(status) = bench.0.try_wait()? {
            ensure!(status.success(), "the load generator failed: {status}");
            break;
        }
        if let Some(status) = server.0.try_wait()? {
            bail!(
                "the server exited during the soak: {status}; see {}",
                options.output_dir.join("server.log").display()
            );
        }
        let now = Instant::now();
        if now >= next_sample {
            let elapsed_seconds = started.elapsed().as_secs_f64();
            let resident_bytes = resident_bytes(server_pid)?;
            let transfers_created = transfers_created(address)?;
            let transfers_per_second = samples.last().map_or(0.0, |previous| {
                let seconds = elapsed_seconds - previous.elapsed_seconds;
                (transfers_created.saturating_sub(previous.transfers_created)) as f64 / seconds.max(1e-9)
            });
            let sample = Sample { elapsed_seconds, resident_bytes, transfers_created, transfers_per_second };
            writeln!(samples_file, "{}", serde_json::to_string(&sample)?)?;
            println!(
                "soak: {elapsed_seconds:>6.0} s  rss {:>7.1} MiB  stored {transfers_created:>11}  {transfers_per_second:>9.0}/s",
                resident_bytes as f64 / 1_048_576.0
            );
            samples.push(sample);
            next_sample += interval;
        }
        // The load generator's exit is polled, not waited for, so that sampling keeps its pace.
        std::thread::sleep(next_sample.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
    }
    drop(server);

    let summary = summarize(&samples, options.warm_up_seconds as f64)?;
    println!("{summary}");
    let chart_path = options.output_dir.join("soak.svg");
    draw(&samples, &chart_path, &summary.title(&options))?;
    println!("wrote {} and {}", samples_path.display(), chart_path.display());
    Ok(())
}

/// Reads the server's stdout until `listening on ADDR`.
fn wait_for_listening(server: &mut Child) -> anyhow::Result<SocketAddr> {
    let stdout = server.stdout.take().context("the server's stdout")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(address) = line.strip_prefix("listening on ") {
                let _ = sender.send(address.trim().to_owned());
            }
        }
    });
    let address = receiver.recv_timeout(START_TIMEOUT).context("the server did not print `listening on` in time")?;
    address.parse().with_context(|| format!("`listening on {address}`"))
}

/// `VmRSS` of `pid`, in bytes.
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib * 1024)
}

/// `ledger_transfers_total{result="created"}` from the server's `/metrics`.
fn transfers_created(address: SocketAddr) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let line = answer
        .lines()
        .find(|line| line.starts_with("ledger_transfers_total{") && line.contains("result=\"created\""))
        .context("no ledger_transfers_total{result=\"created\"} in /metrics")?;
    let value = line.rsplit(' ').next().context("a metric value")?;
    // Counters are printed as whole numbers.
    value.parse::<u64>().with_context(|| format!("metric value {value}"))
}

/// The budget's figures over a run.
struct Summary {
    stored_transfers: u64,
    peak_resident_bytes: u64,
    warm_up_resident_bytes: u64,
    final_resident_bytes: u64,
    growth_bytes_per_transfer: f64,
    first_minute_per_second: f64,
    last_minute_per_second: f64,
}

impl Summary {
    fn title(&self, options: &Options) -> String {
        format!(
            "ledgerd soak: HTTP batches of {}, {} connections, {} accounts",
            options.batch, options.connections, options.accounts
        )
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
        writeln!(formatter, "stored transfers: {}", self.stored_transfers)?;
        writeln!(
            formatter,
            "resident: {:.1} MiB after warm-up, {:.1} MiB at the end, {:.1} MiB peak",
            mib(self.warm_up_resident_bytes),
            mib(self.final_resident_bytes),
            mib(self.peak_resident_bytes)
        )?;
        writeln!(
            formatter,
            "resident growth after warm-up: {:.2} B per stored transfer",
            self.growth_bytes_per_transfer
        )?;
        write!(
            formatter,
            "throughput: first minute {:.0}/s, last minute {:.0}/s ({:.0} % of the first)",
            self.first_minute_per_second,
            self.last_minute_per_second,
            100.0 * self.last_minute_per_second / self.first_minute_per_second.max(1e-9)
        )
    }
}

fn summarize(samples: &[Sample], warm_up_seconds: f64) -> anyhow::Result<Summary> {
    ensure!(samples.len() >= 3, "too few samples ({}) for a summary; run longer", samples.len());
    let last = samples[samples.len() - 1];
    let warm = samples.iter().find(|sample| sample.elapsed_seconds >= warm_up_seconds).copied().unwrap_or(samples[0]);
    let grown_transfers = last.transfers_created.saturating_sub(warm.transfers_created);
    let growth_bytes_per_transfer = if grown_transfers == 0 {
        0.0
    } else {
        (last.resident_bytes as f64 - warm.resident_bytes as f64) / grown_transfers as f64
    };
    let rate_between = |from: f64, to: f64| {
        let inside: Vec<&Sample> =
            samples.iter().filter(|sample| sample.elapsed_seconds >= from && sample.elapsed_seconds <= to).collect();
        match (inside.first(), inside.last()) {
            (Some(first), Some(last)) if last.elapsed_seconds > first.elapsed_seconds => {
                (last.transfers_created - first.transfers_created) as f64
                    / (last.elapsed_seconds - first.elapsed_seconds)
            }
            _ => 0.0,
        }
    };
    // The first minute starts once transfers flow (accounts are opened first).
    let flowing =
        samples.iter().find(|sample| sample.transfers_created > 0).map_or(0.0, |sample| sample.elapsed_seconds);
    Ok(Summary {
        stored_transfers: last.transfers_created,
        peak_resident_bytes: samples.iter().map(|sample| sample.resident_bytes).max().unwrap_or(0),
        warm_up_resident_bytes: warm.resident_bytes,
        final_resident_bytes: last.resident_bytes,
        growth_bytes_per_transfer,
        first_minute_per_second: rate_between(flowing, flowing + 60.0),
        last_minute_per_second: rate_between(last.elapsed_seconds - 60.0, last.elapsed_seconds),
    })
}

fn draw(samples: &[Sample], output: &Path, title: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(output, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let end_seconds = samples.last().map_or(1.0, |sample| sample.elapsed_seconds).max(1.0);
    let resident_max = samples.iter().map(|sample| sample.resident_bytes).max().unwrap_or(1) as f64 / 1_048_576.0;
    let rate_max = samples.iter().map(|sample| sample.transfers_per_second).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..end_seconds, 0.0..resident_max * 1.15 + 1.0)?
        .set_secondary_coord(0.0..end_seconds, 0.0..rate_max * 1.15 + 1.0);
    chart.configure_mesh().x_desc("seconds").y_desc("server resident memory, MiB").draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("durable transfers/s")
        .y_label_formatter(&|value| format!("{value:.0}"))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|sample| (sample.elapsed_seconds, sample.resident_bytes as f64 / 1_048_576.0)),
            blue.stroke_width(2),
        ))?
        .label("resident memory")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().skip(1).map(|sample| (sample.elapsed_seconds, sample.transfers_per_second)),
            red.stroke_width(2),
        ))?
        .label("transfers/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present().with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elapsed_seconds: f64, resident_mib: u64, transfers_created: u64) -> Sample {
        Sample { elapsed_seconds, resident_bytes: resident_mib << 20, transfers_created, transfers_per_second: 0.0 }
    }

    #[test]
    fn the_summary_takes_growth_after_the_warm_up_and_the_rates_of_the_first_and_last_minute() {
        let samples = [
            sample(0.0, 50, 0),
            sample(10.0, 60, 100),
            sample(60.0, 100, 1_000_100),
            sample(120.0, 102, 2_000_100),
            sample(180.0, 104, 2_600_100),
        ];
        let summary = summarize(&samples, 60.0).unwrap();
        assert_eq!(summary.stored_transfers, 2_600_100);
        assert_eq!(summary.peak_resident_bytes, 104 << 20);
        let expected_growth = f64::from(4_u32 << 20) / 1_600_000.0;
        assert!((summary.growth_bytes_per_transfer - expected_growth).abs() < 1e-9);
        // Transfers flow from 10 s: the first minute is 10..70 s, which holds the samples at 10 and 60 s.
        assert!((summary.first_minute_per_second - 1_000_000.0 / 50.0).abs() < 1e-6);
        assert!((summary.last_minute_per_second - 600_000.0 / 60.0).abs() < 1e-6);
    }

    #[test]
    fn a_run_too_short_for_a_summary_is_refused() {
        assert!(summarize(&[sample(0.0, 1, 0), sample(5.0, 1, 10)], 1.0).is_err());
    }
}
