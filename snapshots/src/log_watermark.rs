//! The log's durable high-water mark: `<data_dir>/LOG_WATERMARK`, a sequence the log is known
//! to have reached durably, kept outside sled so that a log that comes back shorter is caught.
//!
//! Why: sled checks a CRC on each of its own log messages, and on reopening it treats the
//! first message that fails it as the torn end of the log and drops everything after it (a
//! crash can only tear writes that were never acknowledged, so for a crash that is right). A
//! flipped byte or a truncation of sled's file therefore makes the log silently shorter: the
//! groups after the damage vanish, acknowledged or not, and our own per-group checksums never
//! see them. This file is the independent witness. While serving, [`WatermarkKeeper`] writes
//! the log's last durable sequence every second (only when it moved) and once more at a clean
//! stop; each write is a temporary file, fsync, rename, fsync of the directory. At start,
//! [`check`] refuses a recovered log that ends before the mark. It can have no false alarm: the
//! mark is only ever a sequence that was already durable, and durable records survive a crash.
//!
//! What it cannot see: records acknowledged after the last mark was written (at most about a
//! second of writes before a crash) that are then lost to damage of the log's tail. That loss
//! looks exactly like a crash before the acknowledgement, and RUNBOOK.md says so.
//!
//! Format, one line: `ledgerd-log-watermark v1 seq=<N> crc32c=<8 hex digits>`, the checksum
//! over the text before ` crc32c=`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::background_thread::BackgroundThread;
use crate::wal::Wal;

/// Name of the file inside the data directory.
pub const WATERMARK_FILE_NAME: &str = "LOG_WATERMARK";
const PREFIX: &str = "ledgerd-log-watermark v1 seq=";
/// How often the keeper writes the mark while the log moves.
pub const WATERMARK_PERIOD: Duration = Duration::from_secs(1);

/// What is wrong with the mark, or with a log against it.
#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error(
        "the log ends at seq {log_last_seq}, but seq {watermark_seq} was durable before (recorded in {}): \
         acknowledged log records are missing (the log was damaged or truncated); see RUNBOOK.md, data \
         inconsistency",
        .path.display()
    )]
    LogShorter { log_last_seq: u64, watermark_seq: u64, path: PathBuf },
    #[error("{} is corrupt ({reason}); see RUNBOOK.md, data inconsistency", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {action}: {source}", .path.display())]
    Io { path: PathBuf, action: &'static str, source: io::Error },
}

fn watermark_path(data_dir: &Path) -> PathBuf {
    data_dir.join(WATERMARK_FILE_NAME)
}

fn encode(seq: u64) -> String {
    let text = format!("{PREFIX}{seq}");
    format!("{text} crc32c={:08x}\n", crc32c::crc32c(text.as_bytes()))
}

fn decode(path: &Path, text: &str) -> Result<u64, WatermarkError> {
    let corrupt = |reason: &str| WatermarkError::Corrupt { path: path.to_owned(), reason: reason.to_owned() };
    let line = text.strip_suffix('\n').ok_or_else(|| corrupt("truncated"))?;
    let (body, checksum) = line.rsplit_once(" crc32c=").ok_or_else(|| corrupt("no checksum"))?;
    let stored = u32::from_str_radix(checksum, 16).map_err(|_| corrupt("bad checksum"))?;
    if checksum.len() != 8 || stored != crc32c::crc32c(body.as_bytes()) {
        return Err(corrupt("checksum mismatch"));
    }
    body.strip_prefix(PREFIX).and_then(|seq| seq.parse().ok()).ok_or_else(|| corrupt("unknown format"))
}

/// The recorded mark of `data_dir`, `None` when there is none yet.
pub fn read(data_dir: &Path) -> Result<Option<u64>, WatermarkError> {
    let path = watermark_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => decode(&path, &text).map(Some),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            Err(WatermarkError::Corrupt { path, reason: "not text".to_owned() })
        }
        Err(source) => Err(WatermarkError::Io { path, action: "read", source }),
    }
}

/// Records durably that the log reached `seq`.
pub fn write(data_dir: &Path, seq: u64) -> Result<(), WatermarkError> {
    durable::replace_file_with_bytes(data_dir, WATERMARK_FILE_NAME, encode(seq).as_bytes())
        .map_err(|source| WatermarkError::Io { path: watermark_path(data_dir), action: "write", source })
}

/// Refuses a log that ends before the recorded mark.
pub fn check(data_dir: &Path, log_last_seq: u64) -> Result<(), WatermarkError> {
    match read(data_dir)? {
        Some(watermark_seq) if log_last_seq < watermark_seq => {
            Err(WatermarkError::LogShorter { log_last_seq, watermark_seq, path: watermark_path(data_dir) })
        }
        _ => Ok(()),
    }
}

/// The thread that keeps the mark up to date while serving. Stopping it writes a last mark.
pub struct WatermarkKeeper {
    thread: BackgroundThread,
}

impl WatermarkKeeper {
    /// Writes the mark for `wal`'s current end at once, then starts the thread.
    /// Panics if the OS refuses to start a thread.
    pub fn start(data_dir: PathBuf, wal: Wal, period: Duration) -> Result<WatermarkKeeper, WatermarkError> {
        let mut written = wal.last_seq();
        write(&data_dir, written)?;
        let thread = BackgroundThread::spawn("ledger-watermark", move |stopped| {
            loop {
                let stopping = match stopped.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
                };
                let durable = wal.last_seq();
                if durable > written {
                    match write(&data_dir, durable) {
                        Ok(()) => written = durable,
                        Err(error) => tracing::error!(%error, "cannot record the log's high-water mark"),
                    }
                }
                if stopping {
                    return;
                }
            }
        });
        Ok(WatermarkKeeper { thread })
    }

    /// Writes a last mark and stops the thread. Call it once the committer has written
    /// everything, so the mark is the log's final end.
    pub fn stop(self) {
        self.thread.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        check(dir.path(), 0).unwrap();
        write(dir.path(), 42).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(42));
        check(dir.path(), 42).unwrap();
        check(dir.path(), 50).unwrap();
        let error = check(dir.path(), 41).unwrap_err();
        assert!(matches!(error, WatermarkError::LogShorter { log_last_seq: 41, watermark_seq: 42, .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");

        let path = dir.path().join(WATERMARK_FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        for index in 0..good.len() {
            let mut damaged = good.clone();
            damaged[index] ^= 0x01;
            std::fs::write(&path, &damaged).unwrap();
            assert!(read(dir.path()).is_err(), "a flip at byte {index} went unnoticed");
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(read(dir.path()).is_err(), "a truncation to {len} bytes went unnoticed");
        }
    }

    #[test]
    fn the_keeper_follows_the_log_and_writes_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let keeper = WatermarkKeeper::start(dir.path().to_owned(), wal.clone(), Duration::from_secs(3600)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(0));
        let record = engine::Record::External { kind: "k".to_owned(), key: "a".to_owned(), payload: Vec::new() };
        wal.append(&engine::Group::new(1, vec![record.clone(), record])).unwrap();
        keeper.stop();
        assert_eq!(read(dir.path()).unwrap(), Some(2));
    }
}
