//! Reads of old data from a served data dir written by `recovery_fixture`: the latency of
//! `GET /v1/transfers/{id}` and of a history page of 100 for random transfers and accounts, and
//! an idempotent replay of the oldest transfer.
//!
//! `cold_reads --target HOST:PORT --transfers N --accounts A [--samples 1000] [--seed 1]`
//! reads `t{index:09}` for random `index < N` and `/v1/accounts/a{index:07}/transfers?limit=100`
//! for random accounts, one request at a time on one keep-alive connection, and prints p50,
//! p99 and the maximum of each. Then it reads `t000000000` and sends it again as a new
//! transfer with the same fields: the answer must be 200 with the stored transfer (its `seq`
//! unchanged). `benches/recovery.sh` runs it right after a restart with the kernel's page cache
//! dropped, so that the reads come from the disk.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use benches::Random;
use hdrhistogram::Histogram;

struct Options {
    target: String,
    transfers: usize,
    accounts: usize,
    samples: usize,
    seed: u64,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { target: String::new(), transfers: 0, accounts: 0, samples: 1_000, seed: 1 };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => options.target = value()?,
            "--transfers" => options.transfers = value()?.parse().context("--transfers")?,
            "--accounts" => options.accounts = value()?.parse().context("--accounts")?,
            "--samples" => options.samples = value()?.parse().context("--samples")?,
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            other => bail!("unknown flag {other}; see the module documentation"),
        }
    }
    ensure!(!options.target.is_empty(), "--target HOST:PORT is required");
    ensure!(options.transfers > 0 && options.accounts > 1, "--transfers and --accounts (at least 2) are required");
    ensure!((1..=1_000_000).contains(&options.samples), "--samples must be 1..=1000000");
    Ok(options)
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    target: String,
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(target: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Connection { target: target.to_owned(), reader: BufReader::new(stream) })
    }

    /// Sends one request and reads the answer: (status, body).
    fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target);
        if let Some(body) = body {
            request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line.split_whitespace().nth(1).context("a status line")?.parse()?;
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; content_length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8(body)?))
    }
}

fn timed(
    connection: &mut Connection,
    paths: impl Iterator<Item = String>,
    histogram: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    for path in paths {
        let started = Instant::now();
        let (status, body) = connection.send("GET", &path, None)?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        ensure!(status == 200, "GET {path}: {status} {body}");
        histogram.record(micros.max(1))?;
    }
    Ok(())
}

fn print(name: &str, histogram: &Histogram<u64>) {
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "{name}: {} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        histogram.len(),
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max())
    );
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let mut connection = Connection::open(&options.target)?;
    let mut random = Random::new(options.seed);

    let mut transfers = Histogram::<u64>::new(3)?;
    let ids: Vec<String> =
        (0..options.samples).map(|_| format!("/v1/transfers/t{:09}", random.below(options.transfers))).collect();
    timed(&mut connection, ids.into_iter(), &mut transfers)?;
    print("GET /v1/transfers/{id}", &transfers);

    let mut pages = Histogram::<u64>::new(3)?;
    let accounts: Vec<String> = (0..options.samples)
        .map(|_| format!("/v1/accounts/a{:07}/transfers?limit=100", 1 + random.below(options.accounts - 1)))
        .collect();
    timed(&mut connection, accounts.into_iter(), &mut pages)?;
    print("GET /v1/accounts/{id}/transfers?limit=100", &pages);

    let (status, stored) = connection.send("GET", "/v1/transfers/t000000000", None)?;
    ensure!(status == 200, "GET t000000000: {status} {stored}");
    let stored: serde_json::Value = serde_json::from_str(&stored)?;
    let replay = serde_json::json!({
        "id": stored["id"],
        "debit_account": stored["debit_account"],
        "credit_account": stored["credit_account"],
        "amount": stored["amount"],
    });
    let started = Instant::now();
    let (status, answer) = connection.send("POST", "/v1/transfers", Some(&replay.to_string()))?;
    let elapsed = started.elapsed();
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    ensure!(status == 200, "the replay of t000000000 answered {status}: {answer}");
    ensure!(answer["seq"] == stored["seq"], "the replay answered another transfer: {answer} (stored {stored})");
    println!(
        "idempotent replay of t000000000 (seq {}): 200 with the stored transfer in {:.2} ms",
        stored["seq"],
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}
