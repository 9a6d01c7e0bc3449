//! The `ledgerd` binary. Everything lives in the library ([`api::cli`]); this stays thin.

/// mimalloc instead of glibc malloc: the ledger allocates many small, short-lived objects per
/// transfer (messages, ids, JSON), and under load glibc's allocator was about a sixth of the
/// server's CPU.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    api::cli::main()
}
