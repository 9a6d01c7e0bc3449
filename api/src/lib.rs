//! ledgerd's front: the HTTP API and the `ledgerd` command line.
//!
//! [`cli`] parses the command line and dispatches to a command; [`serve`] is `ledgerd serve`
//! (config, the data dir opened through `actors::open`, the server's life); [`commands`] are
//! the offline commands (`snapshot create|list|verify`, `restore`, `verify`) and [`audit`] the
//! full check behind `verify`;
//! [`http`] is the axum application (routes, auth, errors, metrics, OpenAPI); [`webhooks`]
//! turns signed provider events into deposits and withdrawals, exactly once; [`bench`] is
//! `ledgerd bench`, the load generator. Only this crate knows HTTP and JSON.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod http;
pub mod serve;
pub mod webhooks;
