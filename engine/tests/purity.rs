//! The engine is the pure domain: it does no IO, starts no task and reads no clock. clippy's
//! `engine/clippy.toml` refuses the std calls that would; this test refuses dependencies that
//! would: the direct ones must be on a short list of pure crates, and (where `cargo` is at hand)
//! nothing that does IO may appear among the transitive ones.

// This test runs `cargo tree`: a tool's work, outside the engine's own code.
#![allow(clippy::disallowed_methods)]

/// Crates the engine may depend on directly: encoding, checksums, hashing, errors.
const ALLOWED: [&str; 5] = ["serde", "postcard", "crc32c", "thiserror", "ahash"];

/// Crates that must not appear anywhere in the engine's normal dependency tree.
const FORBIDDEN: [&str; 12] =
    ["toml", "hex", "sha2", "tokio", "sled", "axum", "hyper", "ractor", "mio", "reqwest", "rustls", "socket2"];

fn direct_dependencies() -> Vec<String> {
    let manifest = include_str!("../Cargo.toml");
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn direct_dependencies_are_pure() {
    let names = direct_dependencies();
    assert!(names.contains(&"postcard".to_owned()), "the manifest was read: {names:?}");
    for name in &names {
        assert!(
            ALLOWED.contains(&name.as_str()),
            "engine depends on {name}, which is not on the pure list {ALLOWED:?}"
        );
    }
}

#[test]
fn no_io_crate_in_the_dependency_tree() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "-p", "engine", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        other => {
            println!("NOTICE: `cargo tree` unavailable ({other:?}); the transitive check is skipped");
            return;
        }
    };
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"engine"), "the tree was read: {tree}");
    for forbidden in FORBIDDEN {
        assert!(!crates.contains(&forbidden), "{forbidden} is in the engine's dependency tree:\n{tree}");
    }
}
