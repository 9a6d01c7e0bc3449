//! The `ledgerd` command line: parsing, dispatch, and how failures are reported.
//!
//! This module owns the clap definition of every subcommand (adding one is one variant of
//! [`Command`] and one arm of [`run`]), the exit codes (0 success, 1 failure, 2 usage error),
//! and the rule that any failure is one clear line on stderr, never a panic backtrace (a panic
//! hook prints panics as one line too).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench::{self, BenchArgs};
use crate::commands::{self, RestoreArgs, SnapshotCommand, VerifyArgs};
use crate::serve::{self, ServeArgs};

/// ledgerd, a double-entry ledger server.
#[derive(Debug, Parser)]
#[command(name = "ledgerd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Snapshots of a data dir: create (offline), list, verify.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Builds a new data dir from a snapshot and the log, up to a sequence (point in time).
    Restore(RestoreArgs),
    /// Offline: replays snapshots and log, checks every invariant, prints a summary.
    Verify(VerifyArgs),
    /// The load generator: creates funded accounts, sends random transfers, reports
    /// throughput, latency, results and whether the ledger still balances.
    Bench(BenchArgs),
}

/// Exit code of a usage error (bad flags).
const EXIT_USAGE: u8 = 2;

/// Parses the process's arguments and runs the command.
pub fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    run(cli)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve::run(&args).map_err(|error| error.to_string()),
        Command::Snapshot(command) => commands::run_snapshot(&command).map_err(|error| error.to_string()),
        Command::Restore(args) => commands::run_restore(&args).map_err(|error| error.to_string()),
        Command::Verify(args) => commands::run_verify(&args).map_err(|error| error.to_string()),
        Command::Bench(args) => bench::run_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// Prints `ledgerd: error: MESSAGE` (one line) and returns exit code 1.
pub fn fail(message: &str) -> ExitCode {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("ledgerd: error: {message}");
    ExitCode::FAILURE
}

/// `--help` and `--version` print normally; any other clap error prints its first line only.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().find(|line| !line.trim().is_empty()).unwrap_or("invalid command line");
            let first = first.trim().trim_start_matches("error:").trim();
            eprintln!("ledgerd: error: {first} (see ledgerd --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Panics print one line (no backtrace unless `RUST_BACKTRACE` is set) and are logged.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default_hook(info);
            return;
        }
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(%payload, %location, "panic");
        eprintln!("ledgerd: internal error: {payload} at {location}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ledgerd", "serve", "--bind", "127.0.0.1:0", "--data-dir", "/tmp/x"]).unwrap();
        match cli.command {
            Command::Serve(args) => assert_eq!(args.bind.unwrap().port(), 0),
            _ => panic!("parsed as another command"),
        }
        assert!(Cli::try_parse_from(["ledgerd", "serve", "--bind", "nope"]).is_err());
        let cli = Cli::try_parse_from(["ledgerd", "restore", "--from", "snap-1", "--data-dir", "new", "--to-seq", "7"])
            .unwrap();
        match cli.command {
            Command::Restore(args) => assert_eq!((args.from.as_str(), args.to_seq), ("snap-1", Some(7))),
            _ => panic!("parsed as another command"),
        }
        let cli = Cli::try_parse_from(["ledgerd", "snapshot", "list", "--data-dir", "d", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Snapshot(SnapshotCommand::List(args)) if args.json));
        assert!(Cli::try_parse_from(["ledgerd", "snapshot", "create"]).is_err(), "--data-dir is required");
        assert!(
            Cli::try_parse_from(["ledgerd", "restore", "--from", "x", "--data-dir", "d", "--to-seq", "-1"]).is_err()
        );
        let cli = Cli::try_parse_from(["ledgerd", "bench", "--target", "http://127.0.0.1:1", "--batch", "10"]).unwrap();
        match cli.command {
            Command::Bench(args) => assert_eq!((args.target.as_str(), args.batch), ("http://127.0.0.1:1", 10)),
            _ => panic!("parsed as another command"),
        }
    }
}
