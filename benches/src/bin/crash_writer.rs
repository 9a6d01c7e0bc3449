//! A process that writes through the engine and reports every acknowledgement, for the
//! crash test: `crash_writer DATA_DIR SEED [history-far-behind]`.
//!
//! It opens (or recovers) the ledger in DATA_DIR, then keeps sending transfers from 8
//! concurrent tasks and atomic/non-atomic batches, and prints one line per acknowledged
//! (durable) transfer: `ack ID CENTS`, flushed at once. The test kills it with SIGKILL at a
//! random moment and checks that every printed acknowledgement survived. With
//! `history-far-behind` the history never checkpoints on its own (no record count or interval
//! is reached within a round), so that at the kill its durable watermark is far behind the log and the
//! recovery must derive everything written since the start from the log.

/// The same allocator as the `ledgerd` binary, so that the figures are the server's.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::sync::{Arc, Mutex};

use actors::{BatchItemResult, LedgerError};
use benches::{Random, usd_account, usd_transfer};
use engine::Overdraft;

const ACCOUNTS: usize = 16;

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let data_dir: std::path::PathBuf =
        arguments.next().ok_or_else(|| anyhow::anyhow!("usage: crash_writer DATA_DIR SEED"))?.into();
    let seed: u64 = arguments.next().ok_or_else(|| anyhow::anyhow!("usage: crash_writer DATA_DIR SEED"))?.parse()?;
    let history_far_behind = match arguments.next().as_deref() {
        None => false,
        Some("history-far-behind") => true,
        Some(other) => {
            anyhow::bail!("unknown argument {other}: usage: crash_writer DATA_DIR SEED [history-far-behind]")
        }
    };
    let mut settings = benches::open_settings(&data_dir, 3);
    if history_far_behind {
        // Far more than a round writes, and an hour.
        settings.history.checkpoint_records = 1 << 40;
        settings.history.checkpoint_interval_ms = 3_600_000;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let ledger = benches::start_with(settings).await?;
        // `ledger` stays open (and its data dir locked) until the process is killed.
        let handle = ledger.handle.clone();
        handle.create_account(usd_account("bank", Overdraft::Unlimited)).await?;
        for index in 0..ACCOUNTS {
            handle
                .create_account(usd_account(&format!("user-{index}"), Overdraft::Limited(engine::Amount::ZERO)))
                .await?;
        }
        let output = Arc::new(Mutex::new(std::io::stdout()));
        println!("ready");
        let mut tasks = Vec::new();
        for task in 0..8_u64 {
            let (handle, output) = (handle.clone(), output.clone());
            tasks.push(tokio::spawn(async move {
                let mut random = Random::new(seed.wrapping_mul(31).wrapping_add(task));
                let report = |id: &str, amount: engine::Amount| {
                    let mut output = output.lock().expect("stdout lock");
                    writeln!(output, "ack {id} {}", engine::amount::format_minor_units(amount.minor_units(), 2))
                        .and_then(|()| output.flush())
                        .expect("stdout");
                };
                for step in 0_u64.. {
                    let pick = |random: &mut Random| {
                        if random.below(4) == 0 {
                            "bank".to_owned()
                        } else {
                            format!("user-{}", random.below(ACCOUNTS))
                        }
                    };
                    let prefix = format!("r{seed}-t{task}-{step}");
                    if step % 7 == 0 {
                        let items: Vec<_> = (0..4)
                            .map(|item| {
                                let (from, to) = (pick(&mut random), pick(&mut random));
                                usd_transfer(
                                    &format!("{prefix}-{item}"),
                                    &from,
                                    &to,
                                    1 + i64::try_from(random.below(500)).unwrap_or(0),
                                )
                            })
                            .collect();
                        match handle.create_batch(items, step % 14 == 0).await {
                            Ok(results) => {
                                for result in results {
                                    if let BatchItemResult::Created(transfer) = result {
                                        report(transfer.id.as_str(), transfer.amount);
                                    }
                                }
                            }
                            Err(error) => return Err(error),
                        }
                    } else {
                        let (from, to) = (pick(&mut random), pick(&mut random));
                        let request =
                            usd_transfer(&prefix, &from, &to, 1 + i64::try_from(random.below(500)).unwrap_or(0));
                        match handle.create_transfer(request).await {
                            Ok((transfer, _)) => report(transfer.id.as_str(), transfer.amount),
                            Err(LedgerError::Rejected(_)) => {}
                            Err(error) => return Err(error),
                        }
                    }
                }
                Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    })
}
