//! The data directory's lock: one ledgerd process per data directory.
//!
//! An exclusive, non-blocking `flock` (fs4) on `<data_dir>/LOCK`, held for as long as the
//! [`DataDirLock`] lives; the kernel releases it when the process dies, so a crash never
//! leaves a stale lock. The file holds the owner's process id, for humans.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data dir {} is locked by another ledgerd process", .path.display())]
    Locked { path: PathBuf },
    #[error("data dir {}: {action}: {source}", .path.display())]
    Io { path: PathBuf, action: &'static str, source: io::Error },
}

/// Exclusive ownership of a data directory, released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `data_dir` if missing and locks it, or fails at once if another process (or
    /// another lock in this process) holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let io_error = |action| move |source| LockError::Io { path: data_dir.to_owned(), action, source };
        std::fs::create_dir_all(data_dir).map_err(io_error("create the directory"))?;
        let path = data_dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open the lock file"))?;
        if !fs4::fs_std::FileExt::try_lock_exclusive(&file).map_err(io_error("lock"))? {
            return Err(LockError::Locked { path: data_dir.to_owned() });
        }
        file.set_len(0).map_err(io_error("write the lock file"))?;
        writeln!(file, "{}", std::process::id()).map_err(io_error("write the lock file"))?;
        Ok(DataDirLock { _file: file, path: data_dir.to_owned() })
    }

    /// The locked data directory.
    pub fn data_dir(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_until_the_first_is_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let data_dir = parent.path().join("data");
        let lock = DataDirLock::acquire(&data_dir).unwrap();
        assert!(data_dir.join(LOCK_FILE_NAME).exists());
        let error = DataDirLock::acquire(&data_dir).unwrap_err();
        assert!(matches!(error, LockError::Locked { .. }));
        assert_eq!(error.to_string(), format!("data dir {} is locked by another ledgerd process", data_dir.display()));
        drop(lock);
        let _again = DataDirLock::acquire(&data_dir).unwrap();
    }
}
