//! loom models of ledgerd's own concurrency primitives.
//!
//! The primitives are not copied here: their source file is compiled into this crate as a
//! module through `#[path]`, with `--cfg loom` swapping `std::sync` for `loom::sync` inside
//! it. Without `--cfg loom` this crate is empty, so `cargo test --workspace` builds it
//! without loom. Run the models with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`.

/// The commit hand-off of the `snapshots` crate (`snapshots/src/handoff.rs`).
#[cfg(loom)]
#[path = "../../snapshots/src/handoff.rs"]
pub mod handoff;
