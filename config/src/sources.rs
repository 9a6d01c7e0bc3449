//! Where a configuration comes from, and in which order: the embedded default, then a file,
//! then `LEDGERD_<SECTION>__<KEY>` environment variables, then the command line's flags.
//!
//! [`load`] is the one place that layers them; `serve` and the offline commands call it with
//! what they were given. It reads the file named by [`Sources::file`] and nothing else: the
//! caller hands the environment in, so tests can pass their own.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{Config, ConfigError, apply_overrides, default_config, parse};

/// Prefix of the environment variables that override config keys.
pub const ENVIRONMENT_PREFIX: &str = "LEDGERD_";

/// The inputs of a configuration, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file whose keys replace the embedded default's.
    pub file: Option<PathBuf>,
    /// Environment variables as (name, value); only `LEDGERD_<SECTION>__<KEY>` names are
    /// overrides (others, such as a secret named by `secret_env`, are ignored here).
    pub environment: Vec<(String, String)>,
    /// `--data-dir`: replaces `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--bind`: replaces `server.bind`.
    pub bind: Option<SocketAddr>,
}

/// Why a configuration could not be assembled. Each prints as one line naming what is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: ConfigError },
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// The configuration of `sources`, layered and validated.
pub fn load(sources: &Sources) -> Result<Config, LoadError> {
    let mut config = match &sources.file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| LoadError::ReadFile { path: path.clone(), source })?;
            parse(&text).map_err(|source| LoadError::File { path: path.clone(), source })?
        }
        None => default_config(),
    };
    let overrides: Vec<(String, String)> = sources
        .environment
        .iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENVIRONMENT_PREFIX)?;
            rest.contains("__").then(|| (rest.to_owned(), value.clone()))
        })
        .collect();
    apply_overrides(&mut config, &overrides)?;
    if let Some(data_dir) = &sources.data_dir {
        config.storage.data_dir.clone_from(data_dir);
    }
    if let Some(bind) = sources.bind {
        config.server.bind = bind;
    }
    config.validate()?;
    Ok(config)
}

/// The process environment as UTF-8 pairs (others are skipped: they cannot be overrides).
pub fn process_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn precedence_is_flags_then_environment_then_file_then_default() {
        let dir = std::env::temp_dir().join(format!("ledgerd-config-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ledgerd.toml");
        std::fs::write(&file, "[limits]\nbatch_max = 5\nhistory_limit_max = 9\n[server]\nbind = \"127.0.0.1:1111\"\n")
            .unwrap();
        let sources = Sources {
            file: Some(file.clone()),
            environment: environment(&[("LEDGERD_LIMITS__BATCH_MAX", "7"), ("LEDGERD_SERVER__BIND", "127.0.0.1:7777")]),
            data_dir: Some(PathBuf::from("/tmp/elsewhere")),
            bind: Some("127.0.0.1:9999".parse().unwrap()),
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.limits.batch_max, 7, "environment over file");
        assert_eq!(config.limits.history_limit_max, 9, "file over default");
        assert_eq!(config.server.bind.port(), 9999, "flag over environment");
        assert_eq!(config.storage.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(config.limits.description_chars_max, default_config().limits.description_chars_max);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_ledgerd_variables_are_not_overrides_and_unknown_ones_are_named() {
        let config =
            load(&Sources { environment: environment(&[("LEDGERD_CCPAYMENT_SECRET", "x")]), ..Sources::default() })
                .unwrap();
        assert_eq!(config, default_config());
        let error =
            load(&Sources { environment: environment(&[("LEDGERD_SERVER__BINDD", "x")]), ..Sources::default() })
                .unwrap_err();
        assert!(error.to_string().contains("LEDGERD_SERVER__BINDD"), "{error}");
    }

    #[test]
    fn an_unreadable_or_bad_file_is_named() {
        let missing = PathBuf::from("/nonexistent/ledgerd.toml");
        let error = load(&Sources { file: Some(missing), ..Sources::default() }).unwrap_err();
        assert!(matches!(error, LoadError::ReadFile { .. }) && error.to_string().contains("/nonexistent/ledgerd.toml"));
    }
}
