//! The one way ledgerd replaces a file durably: write `<name>.tmp`, fsync it, rename it over
//! `<name>`, fsync the directory. After a crash at any point the file is either the old one or
//! the new one, complete, never a mix; after the call returns, the new one survives a power
//! loss. Snapshots, the log's watermark, the history's manifest and backups all go through
//! [`replace_file`].

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `dir/name` with what `write` writes, atomically and durably. `write` gets the
/// temporary file; it may write it in any way (buffered, streamed). The temporary file is
/// removed when anything fails.
pub fn replace_file(dir: &Path, name: &str, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// [`replace_file`] with these bytes.
pub fn replace_file_with_bytes(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    replace_file(dir, name, |file| file.write_all(bytes))
}

/// fsyncs a directory, so that the entries created, renamed or removed in it survive a power
/// loss.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        replace_file_with_bytes(dir.path(), "MARK", b"one").unwrap();
        replace_file_with_bytes(dir.path(), "MARK", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("MARK")).unwrap(), b"two");
        let failed = replace_file(dir.path(), "MARK", |file| {
            file.write_all(b"thr")?;
            Err(io::Error::other("the disk is full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(dir.path().join("MARK")).unwrap(), b"two");
        assert!(!dir.path().join("MARK.tmp").exists());
    }
}
