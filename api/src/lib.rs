//! ledgerd's front: the HTTP API and the `ledgerd` command line.
//!
//! [`cli`] parses the command line and dispatches to a command; [`serve`] is `ledgerd serve`
//! (config, data dir, recovery, the server's life); [`http`] is the axum application (routes,
//! auth, errors, metrics, OpenAPI); [`bench`] is `ledgerd bench`, the load generator. Only this
//! crate knows HTTP and JSON.

pub mod bench;
pub mod cli;
pub mod http;
pub mod serve;
