//! The operations suites against the real `ledgerd` binary, in one test binary (each test
//! binary is a release link in CI, so they share one): crash safety under HTTP load
//! ([`crash`]), damaged data dirs ([`corruption`]), the offline commands with point-in-time
//! restore and log retention ([`commands`]), the online backup ([`backup`]) and the files of
//! `docker/` ([`docker_files`]). [`support`] holds what they share.
//!
//! Run one suite with `cargo test -p api --test operations crash::` (and so on).

mod backup;
mod commands;
mod corruption;
mod crash;
mod docker_files;
#[path = "../process/mod.rs"]
mod process;
mod support;
