//! The configured payment providers, with their secrets resolved.
//!
//! This module owns [`Providers`]: every `[[webhooks.providers]]` entry turned into a
//! [`Provider`] whose secret is known (from the config, or from the environment variable the
//! config names, read once at startup) and already decoded into its HMAC key. A missing
//! variable, or a Standard Webhooks secret that is not `whsec_<base64>`, is a startup error
//! naming the provider and the variable. Secrets are never logged: [`Provider`]'s `Debug`
//! hides the key.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use config::{ProviderScheme, WebhooksConfig};

use crate::webhooks::signature::standard_key;

/// One provider, ready to verify deliveries and sign record look-ups.
#[derive(Clone)]
pub struct Provider {
    pub name: Arc<str>,
    pub scheme: ProviderScheme,
    /// The HMAC key: the decoded `whsec_` secret (standard) or the app secret's bytes
    /// (ccpayment).
    key: Arc<[u8]>,
    /// `ccpayment`: the application id.
    pub app_id: String,
    /// `ccpayment`: base URL of the record API, without a trailing `/`.
    pub api_base_url: String,
    pub replay_window_seconds: u64,
    pub fetch_timeout: Duration,
    pub fetch_retries: u32,
}

impl Provider {
    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Provider")
            .field("name", &self.name)
            .field("scheme", &self.scheme)
            .field("key", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("api_base_url", &self.api_base_url)
            .field("replay_window_seconds", &self.replay_window_seconds)
            .finish_non_exhaustive()
    }
}

/// Why the providers could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "webhook provider \"{provider}\": environment variable {variable} (webhooks.providers[{index}].secret_env) is not set"
    )]
    MissingSecret { provider: String, index: usize, variable: String },
    #[error("webhook provider \"{provider}\": environment variable {variable} is empty")]
    EmptySecret { provider: String, variable: String },
    #[error(
        "webhook provider \"{provider}\": the secret in environment variable {variable} must be `whsec_` followed by the base64 of the key"
    )]
    MalformedSecret { provider: String, variable: String },
}

/// Every configured provider, by name.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    by_name: HashMap<Arc<str>, Provider>,
}

impl Providers {
    /// Resolves the providers of `config`, reading `secret_env` variables through `variable`.
    pub fn resolve(
        config: &WebhooksConfig,
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Providers, ProviderError> {
        let mut by_name = HashMap::new();
        for (index, entry) in config.providers.iter().enumerate() {
            let (secret, source) = match (&entry.secret, &entry.secret_env) {
                (Some(secret), _) => (secret.clone(), None),
                (None, Some(name)) => {
                    let value = variable(name).ok_or_else(|| ProviderError::MissingSecret {
                        provider: entry.name.clone(),
                        index,
                        variable: name.clone(),
                    })?;
                    if value.is_empty() {
                        return Err(ProviderError::EmptySecret {
                            provider: entry.name.clone(),
                            variable: name.clone(),
                        });
                    }
                    (value, Some(name.clone()))
                }
                // Config validation guarantees one of the two.
                (None, None) => {
                    return Err(ProviderError::MissingSecret {
                        provider: entry.name.clone(),
                        index,
                        variable: String::new(),
                    });
                }
            };
            let key: Vec<u8> = match entry.scheme {
                ProviderScheme::Standard => standard_key(&secret).ok_or_else(|| ProviderError::MalformedSecret {
                    provider: entry.name.clone(),
                    variable: source.clone().unwrap_or_else(|| "(config)".to_owned()),
                })?,
                ProviderScheme::Ccpayment => secret.into_bytes(),
            };
            let name: Arc<str> = Arc::from(entry.name.as_str());
            let provider = Provider {
                name: name.clone(),
                scheme: entry.scheme,
                key: key.into(),
                app_id: entry.app_id.clone().unwrap_or_default(),
                api_base_url: entry.api_base_url.clone().unwrap_or_default().trim_end_matches('/').to_owned(),
                replay_window_seconds: entry.replay_window_seconds,
                fetch_timeout: Duration::from_millis(entry.fetch_timeout_ms),
                fetch_retries: entry.fetch_retries,
            };
            by_name.insert(name, provider);
        }
        Ok(Providers { by_name })
    }

    /// Every provider, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.by_name.values()
    }

    /// The provider named `name` (names are matched exactly, as configured).
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::parse;

    const CONFIG: &str = "[[webhooks.providers]]\nname = \"processor\"\nscheme = \"standard\"\nsecret_env = \"PROCESSOR_SECRET\"\n\n\
        [[webhooks.providers]]\nname = \"ccpayment\"\nscheme = \"ccpayment\"\napp_id = \"app\"\n\
        secret_env = \"CC_SECRET\"\napi_base_url = \"http://127.0.0.1:1/\"\n";

    #[test]
    fn secrets_come_from_the_named_variables() {
        let config = parse(CONFIG).unwrap();
        let variables = |name: &str| match name {
            "PROCESSOR_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            "CC_SECRET" => Some("cc-secret".to_owned()),
            _ => None,
        };
        let providers = Providers::resolve(&config.webhooks, variables).unwrap();
        assert_eq!(providers.len(), 2);
        let ccpayment = providers.get("ccpayment").unwrap();
        assert_eq!(ccpayment.key(), b"cc-secret");
        assert_eq!(ccpayment.api_base_url, "http://127.0.0.1:1");
        assert_eq!(providers.get("processor").unwrap().key().len(), 24);
        assert!(providers.get("Processor").is_none());
        let debug = format!("{providers:?}");
        assert!(!debug.contains("cc-secret"), "{debug}");
    }

    #[test]
    fn a_missing_or_malformed_secret_names_the_provider_and_variable() {
        let config = parse(CONFIG).unwrap();
        let error = Providers::resolve(&config.webhooks, |_| None).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("\"processor\"") && text.contains("PROCESSOR_SECRET"), "{text}");
        let malformed = |name: &str| Some(if name == "PROCESSOR_SECRET" { "plain" } else { "x" }.to_owned());
        let error = Providers::resolve(&config.webhooks, malformed).unwrap_err();
        assert!(matches!(error, ProviderError::MalformedSecret { .. }), "{error}");
        assert!(!error.to_string().contains("plain"), "the secret itself is not printed");
        let empty = |_: &str| Some(String::new());
        assert!(matches!(Providers::resolve(&config.webhooks, empty), Err(ProviderError::EmptySecret { .. })));
    }
}
