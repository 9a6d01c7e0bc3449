//! Crash safety: SIGKILL a process writing through the engine at random moments, recover, and
//! check that every acknowledged transfer is in the history with its amount and the totals
//! balance.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn acknowledged_transfers_survive_sigkill() {
    sigkill_rounds(false);
}

/// The history never checkpoints while the writer runs: each kill leaves its watermark far
/// behind the log, and recovery must derive every transfer of the round from the log.
#[test]
fn acknowledged_transfers_survive_sigkill_with_the_history_far_behind_the_log() {
    sigkill_rounds(true);
}

fn sigkill_rounds(history_far_behind: bool) {
    let directory = tempfile::tempdir().unwrap();
    let mut acknowledged: HashMap<String, engine::Amount> = HashMap::new();
    let seed = std::env::var("CRASH_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        u64::from(nanos)
    });
    println!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut random = benches::Random::new(seed);
    for round in 0..6_u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(directory.path())
            .arg((seed.wrapping_mul(7) + round).to_string())
            .args(history_far_behind.then_some("history-far-behind"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let lines = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if lines.0.send(line).is_err() {
                    break;
                }
            }
        });
        let acknowledged_before_round = acknowledged.len();
        // Wait until the writer is up, then let it write for a random 50-550 ms and kill it.
        assert_eq!(lines.1.recv_timeout(Duration::from_secs(60)).unwrap(), "ready", "round {round}");
        let run_for = Duration::from_millis(50 + u64::try_from(random.below(500)).unwrap());
        let deadline = Instant::now() + run_for;
        while let Ok(line) = lines.1.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            record(&mut acknowledged, &line);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Lines already written before the kill were acknowledged too.
        while let Ok(line) = lines.1.try_recv() {
            record(&mut acknowledged, &line);
        }
        let recovered = snapshots::recover(directory.path(), history::HistorySettings::default(), |_| {})
            .expect("recovery after SIGKILL");
        recovered.ledger.check_invariants().expect("invariants after SIGKILL");
        let acknowledged_in_round = u64::try_from(acknowledged.len() - acknowledged_before_round).unwrap();
        if history_far_behind {
            // Every record of the round (accounts, transfers, batches) was past the watermark.
            assert!(
                recovered.reingested_records >= acknowledged_in_round,
                "round {round}: {} records re-derived from the log, {acknowledged_in_round} transfers acknowledged",
                recovered.reingested_records
            );
        }
        for (id, amount) in &acknowledged {
            let stored = recovered.history.transfer(&engine::Id::parse(id).unwrap()).expect("the history reads");
            assert_eq!(stored.map(|transfer| transfer.amount), Some(*amount), "round {round}: acknowledged {id} lost");
        }
        recovered.history.close(recovered.history_threads).expect("the history checkpoints");
        println!("round {round}: {} acknowledged so far, all present", acknowledged.len());
    }
    assert!(acknowledged.len() > 50, "the writer made progress ({})", acknowledged.len());
}

fn record(acknowledged: &mut HashMap<String, engine::Amount>, line: &str) {
    if let Some(rest) = line.strip_prefix("ack ") {
        let (id, amount) = rest.split_once(' ').expect("ack ID AMOUNT");
        acknowledged.insert(id.to_owned(), engine::Currency::new("USD", 2).parse_printed(amount).expect("an amount"));
    }
}
