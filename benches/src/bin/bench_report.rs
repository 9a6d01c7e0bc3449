//! Tables and charts from bench results.
//!
//! Reads reports as `ledgerd bench --json` (and `postgres_ledger --json`) print them, one JSON
//! object per line, from one or more files, groups the runs of the same configuration (system,
//! workload, accounts, hot set, connections, batch) and takes the median of their throughput
//! and p99 latency.
//!
//! - `bench_report summary FILE...` prints one Markdown row per configuration.
//! - `bench_report compare FILE...` pairs PostgreSQL and ledgerd runs of the same workload and
//!   prints a Markdown table with both and the ratio.
//! - `bench_report chart --output FILE.svg FILE...` draws throughput and p99 latency of the
//!   single-transfer runs against connections and of the batched runs against batch size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use api::bench::report::Report;
use clap::{Parser, Subcommand};
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Debug, Parser)]
#[command(name = "bench_report")]
struct Options {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One Markdown row per configuration: median throughput and p99 of its runs.
    Summary { files: Vec<PathBuf> },
    /// PostgreSQL beside ledgerd for each workload, and the ratio.
    Compare { files: Vec<PathBuf> },
    /// An SVG of throughput and p99 latency against connections and against batch size.
    Chart {
        #[arg(long)]
        output: PathBuf,
        /// Chart title.
        #[arg(long, default_value = "ledgerd over HTTP, durable transfers")]
        title: String,
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    match options.command {
        Command::Summary { files } => print!("{}", summary(&read_reports(&files)?)),
        Command::Compare { files } => print!("{}", compare(&read_reports(&files)?)),
        Command::Chart { output, title, files } => {
            chart(&read_reports(&files)?, &output, &title)?;
            println!("wrote {}", output.display());
        }
    }
    Ok(())
}

/// Every report in `files`: lines that hold a JSON object; other lines are skipped.
fn read_reports(files: &[PathBuf]) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(!files.is_empty(), "name at least one results file");
    let mut reports = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('{') {
                let report: Report = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a bench report", file.display(), number + 1))?;
                reports.push(report);
            }
        }
    }
    Ok(reports)
}

/// What makes two runs comparable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Configuration {
    workload: String,
    accounts: u64,
    hot_accounts: Option<u64>,
    batch: usize,
    connections: usize,
    generator_threads: usize,
    system: String,
}

impl Configuration {
    fn of(report: &Report) -> Configuration {
        Configuration {
            workload: report.workload.clone(),
            accounts: report.accounts,
            hot_accounts: report.hot_accounts,
            batch: report.batch,
            connections: report.connections,
            generator_threads: report.generator_threads,
            system: report.system.clone(),
        }
    }

    fn contention(&self) -> String {
        match self.hot_accounts {
            Some(hot) => format!("hot set of {hot}"),
            None => format!("uniform over {}", self.accounts),
        }
    }

    fn shape(&self) -> String {
        if self.workload == "health" {
            format!("GET /health ({} generator threads)", self.generator_threads)
        } else if self.batch == 1 {
            "single transfers".to_owned()
        } else {
            format!("batches of {}", self.batch)
        }
    }
}

/// Medians of the runs of one configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Medians {
    throughput: f64,
    p99_ms: f64,
    runs: usize,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.is_empty() {
        0.0
    } else if values.len() % 2 == 1 {
        values[middle]
    } else {
        f64::midpoint(values[middle - 1], values[middle])
    }
}

fn group(reports: &[Report]) -> BTreeMap<Configuration, Medians> {
    let mut runs: BTreeMap<Configuration, Vec<&Report>> = BTreeMap::new();
    for report in reports {
        runs.entry(Configuration::of(report)).or_default().push(report);
    }
    runs.into_iter()
        .map(|(configuration, reports)| {
            let throughput = median(
                reports
                    .iter()
                    .map(|report| {
                        if report.workload == "health" {
                            report.requests_per_second
                        } else {
                            report.throughput_transfers_per_second
                        }
                    })
                    .collect(),
            );
            let p99_ms = median(reports.iter().map(|report| report.latency_ms.p99).collect());
            (configuration, Medians { throughput, p99_ms, runs: reports.len() })
        })
        .collect()
}

fn summary(reports: &[Report]) -> String {
    let mut table = String::from(
        "| system | workload | contention | connections | per second (median) | p99 ms (median) | runs |\n|---|---|---|---:|---:|---:|---:|\n",
    );
    for (configuration, medians) in group(reports) {
        let unit = if configuration.workload == "health" { "requests" } else { "transfers" };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} {unit} | {:.2} | {} |\n",
            configuration.system,
            configuration.shape(),
            configuration.contention(),
            configuration.connections,
            medians.throughput,
            medians.p99_ms,
            medians.runs
        ));
    }
    table
}

fn compare(reports: &[Report]) -> String {
    let grouped = group(reports);
    let mut table = String::from(
        "| workload | contention | connections | PostgreSQL transfers/s | p99 ms | ledgerd transfers/s | p99 ms | ledgerd ÷ PostgreSQL | runs |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (configuration, postgres) in grouped.iter().filter(|(configuration, _)| configuration.system == "postgresql") {
        let ledgerd_key = Configuration { system: "ledgerd".to_owned(), ..configuration.clone() };
        let Some(ledgerd) = grouped.get(&ledgerd_key) else {
            continue;
        };
        let ratio = if postgres.throughput > 0.0 { ledgerd.throughput / postgres.throughput } else { f64::INFINITY };
        table.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.2} | {ratio:.1}× | {} + {} |\n",
            configuration.shape(),
            configuration.contention(),
            configuration.connections,
            postgres.throughput,
            postgres.p99_ms,
            ledgerd.throughput,
            ledgerd.p99_ms,
            postgres.runs,
            ledgerd.runs
        ));
    }
    table
}

/// One line of a panel: (x, median throughput, median p99) by increasing x.
type Series = Vec<(f64, f64, f64)>;

/// The connections of the batched runs, when they all used the same number.
fn batched_connections(reports: &[Report]) -> Option<usize> {
    let mut connections: Vec<usize> = reports
        .iter()
        .filter(|report| report.system == "ledgerd" && report.workload == "transfers" && report.batch > 1)
        .map(|report| report.connections)
        .collect();
    connections.sort_unstable();
    connections.dedup();
    match connections.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

/// The single-transfer runs by connections (`single`), or the runs by batch size: the batched
/// runs and, when they share one connection count, the single-transfer run at that count
/// (batch size 1).
#[allow(clippy::cast_precision_loss, reason = "plotting small counts")]
fn series(reports: &[Report], single: bool) -> Series {
    let batch_connections = batched_connections(reports);
    let mut points: Series = group(reports)
        .into_iter()
        .filter(|(configuration, _)| configuration.system == "ledgerd" && configuration.workload == "transfers")
        .filter(|(configuration, _)| {
            if single {
                configuration.batch == 1
            } else {
                configuration.batch > 1 || Some(configuration.connections) == batch_connections
            }
        })
        .filter(|(configuration, _)| single || batch_connections.is_none_or(|count| configuration.connections == count))
        .map(|(configuration, medians)| {
            let x = if single { configuration.connections } else { configuration.batch };
            (x as f64, medians.throughput, medians.p99_ms)
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points.dedup_by(|a, b| a.0 == b.0);
    points
}

fn chart(reports: &[Report], output: &Path, title: &str) -> anyhow::Result<()> {
    let single = series(reports, true);
    let batched = series(reports, false);
    anyhow::ensure!(!single.is_empty() || !batched.is_empty(), "no ledgerd transfer runs in the results");
    let batched_label = match batched_connections(reports) {
        Some(connections) => format!("batches, {connections} connections: by batch size"),
        None => "batches: by batch size".to_owned(),
    };
    let root = SVGBackend::new(output, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(600);
    panel(&left, &single, "single transfers: by connections", "connections")?;
    panel(&right, &batched, &batched_label, "transfers per request")?;
    root.present().with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &Series,
    caption: &str,
    x_label: &str,
) -> anyhow::Result<()> {
    if points.is_empty() {
        area.titled(&format!("{caption}: no runs"), ("sans-serif", 16))?;
        return Ok(());
    }
    let x_min = points.first().map_or(1.0, |point| point.0).max(1.0);
    let x_max = points.last().map_or(2.0, |point| point.0).max(x_min * 2.0);
    let throughput_max = points.iter().map(|point| point.1).fold(0.0, f64::max) * 1.15 + 1.0;
    let p99_max = points.iter().map(|point| point.2).fold(0.0, f64::max) * 1.15 + 0.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d((x_min / 1.3..x_max * 1.3).log_scale(), 0.0..throughput_max)?
        .set_secondary_coord((x_min / 1.3..x_max * 1.3).log_scale(), 0.0..p99_max);
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("durable transfers/s (median)")
        .y_label_formatter(&|value| format!("{value:.0}"))
        .x_label_formatter(&|value| format!("{value:.0}"))
        .draw()?;
    chart.configure_secondary_axes().y_desc("p99 latency, ms (median)").draw()?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(points.iter().map(|point| (point.0, point.1)), blue.stroke_width(2)))?
        .label("throughput")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(points.iter().map(|point| Circle::new((point.0, point.1), 4, blue.filled())))?;
    chart
        .draw_secondary_series(LineSeries::new(points.iter().map(|point| (point.0, point.2)), red.stroke_width(2)))?
        .label("p99 latency")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    chart.draw_secondary_series(points.iter().map(|point| TriangleMarker::new((point.0, point.2), 5, red.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: &str, batch: usize, connections: usize, throughput: f64, p99: f64) -> Report {
        let mut report = Report {
            system: system.to_owned(),
            workload: "transfers".to_owned(),
            accounts: 10_000,
            batch,
            connections,
            throughput_transfers_per_second: throughput,
            ..Report::default()
        };
        report.latency_ms.p99 = p99;
        report
    }

    #[test]
    fn medians_of_repeated_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let reports =
            [run("ledgerd", 1, 64, 100.0, 1.0), run("ledgerd", 1, 64, 300.0, 3.0), run("ledgerd", 1, 64, 200.0, 9.0)];
        let grouped = group(&reports);
        let medians = grouped.values().next().unwrap();
        assert_eq!((medians.throughput, medians.p99_ms, medians.runs), (200.0, 3.0, 3));
    }

    #[test]
    fn the_comparison_pairs_the_same_workload() {
        let reports = [
            run("postgresql", 1000, 8, 10_000.0, 50.0),
            run("ledgerd", 1000, 8, 250_000.0, 20.0),
            run("ledgerd", 1, 64, 40_000.0, 2.0),
        ];
        let table = compare(&reports);
        assert!(
            table.contains(
                "| batches of 1000 | uniform over 10000 | 8 | 10000 | 50.00 | 250000 | 20.00 | 25.0× | 1 + 1 |"
            ),
            "{table}"
        );
        // A ledgerd run without a PostgreSQL counterpart is not in the comparison.
        assert_eq!(table.lines().count(), 3, "{table}");
    }

    #[test]
    fn the_chart_is_an_svg_of_both_panels() {
        let reports = [
            run("ledgerd", 1, 1, 5_000.0, 0.4),
            run("ledgerd", 1, 64, 40_000.0, 3.0),
            run("ledgerd", 100, 8, 100_000.0, 10.0),
            run("ledgerd", 1000, 8, 200_000.0, 60.0),
        ];
        let directory = tempfile::tempdir().unwrap();
        let output = directory.path().join("chart.svg");
        chart(&reports, &output, "test chart").unwrap();
        let svg = std::fs::read_to_string(&output).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for text in ["test chart", "single transfers: by connections", "batches, 8 connections", "p99 latency"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(series(&reports, true).len(), 2);
        assert_eq!(series(&reports, false).len(), 2);
        // A single-transfer run at the batched runs' connection count is batch size 1.
        let with_one = [&reports[..], &[run("ledgerd", 1, 8, 9_000.0, 2.0)]].concat();
        assert_eq!(series(&with_one, false).first(), Some(&(1.0, 9_000.0, 2.0)));
        assert_eq!(series(&with_one, true).len(), 3);
    }
}
