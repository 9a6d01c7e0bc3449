//! ledgerd's history on disk: every stored transfer, every account's history and every
//! payment fact, derived from the durable log off the commit path.
//!
//! The log (sled, in `snapshots`) is the journal of record. This crate keeps what is derived
//! from it and must outlive the log's retention: [`History`] ingests durable log records in
//! order ([`History::ingest`]), keeps what it has not written yet in memory, and writes it in
//! large checkpoints with their own durable watermark ([`History::durable_seq`]): after a crash,
//! the log after the watermark is ingested again. Every file is checksummed; damage is an error
//! naming the file, never a wrong answer.
//!
//! The layout ([`format`]): transfers as fixed 128-byte records in log order (an ordinal per
//! transfer), their variable strings apart; an account's history is a chain through its
//! transfers while they are in memory (each names the previous transfer of each of its two
//! accounts, the heads name the newest) and the account index once they are in the files; the
//! id index, the fact index and the account index are immutable sorted runs ([`run`]), the
//! first two with bloom filters, written once per checkpoint and merged in the background;
//! reads go through a bounded page cache ([`cache`]).

pub mod cache;
pub mod format;
pub mod readers;
pub mod run;
pub mod store;

pub use store::{
    AccountPage, HISTORY_DIR_NAME, History, HistoryError, HistorySettings, HistoryStats, HistoryThreads, VerifyReport,
};
