//! ledgerd's front: the HTTP API and the `ledgerd` command line.
//!
//! [`cli`] parses the command line and dispatches to a command; [`serve`] is `ledgerd serve`
//! (config, data dir, recovery, the server's life); [`snapshot_scheduler`] takes snapshots
//! while it serves, [`backup`] copies it elsewhere on demand, and [`log_watermark`] records
//! how far the log durably reached (both on a [`background_thread`]); [`commands`] are the offline commands (`snapshot
//! create|list|verify`, `restore`, `verify`) and [`audit`] the full check behind `verify`;
//! [`http`] is the axum application (routes, auth, errors, metrics, OpenAPI); [`webhooks`]
//! turns signed provider events into deposits and withdrawals, exactly once; [`bench`] is
//! `ledgerd bench`, the load generator. Only this crate knows HTTP and JSON.

pub mod audit;
pub mod background_thread;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod http;
pub mod log_watermark;
pub mod serve;
pub mod snapshot_scheduler;
pub mod webhooks;
