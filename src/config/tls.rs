//! `[ppstp.tls]`, `[bt_http.tls]` (TLS on an HTTP listener) and `[ppstp.auth]` (RFC 7846 §4
//! peer authentication).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::runtime::tls::{ClientCertPolicy, TlsMinVersion, TlsSettings};

/// TLS on an HTTP listener (RFC 7846 §4: the "https" URI scheme).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM file with the certificate chain, end-entity first.
    pub cert: String,
    /// PEM file with the private key; must not be readable by group or others.
    pub key: String,
    /// Lowest TLS version accepted: "1.2" or "1.3" (anything older is refused, RFC 8996).
    pub min_version: String,
    /// A handshake not complete after this long is closed and counted, milliseconds.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            cert: String::new(),
            key: String::new(),
            min_version: "1.2".to_owned(),
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// Checks the keys that need no file access (`section` is e.g. `ppstp.tls`).
    pub(super) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        TlsMinVersion::parse(&self.min_version)
            .map_err(|e| ConfigError::new(format!("{section}.min_version: {e}")))?;
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(ConfigError::new(format!(
                "{section}.handshake_timeout_ms must be 100..=600000"
            )));
        }
        if self.enabled && (self.cert.is_empty() || self.key.is_empty()) {
            return Err(ConfigError::new(format!(
                "{section}.cert and {section}.key must name PEM files when {section}.enabled"
            )));
        }
        Ok(())
    }

    /// The runtime's TLS settings, with the client-certificate policy `client_certs`.
    pub fn settings(&self, client_certs: Option<ClientCertPolicy>) -> Option<TlsSettings> {
        self.enabled.then(|| TlsSettings {
            cert: PathBuf::from(&self.cert),
            key: PathBuf::from(&self.key),
            min_version: TlsMinVersion::parse(&self.min_version).unwrap_or(TlsMinVersion::Tls12),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            client_certs,
        })
    }
}

/// How PPSTP peers authenticate (RFC 7846 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone may act under any peer id.
    #[default]
    None,
    /// TLS client certificates; the peer id is bound to the certificate.
    ClientCert,
    /// HTTP Digest (RFC 7616, SHA-256) against a credentials file of peer ids.
    Digest,
}

/// `[ppstp.auth]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// client_cert: PEM file of CA certificates; a certificate chaining to one acts as the
    /// peer id in its subject common name.
    pub client_ca: String,
    /// client_cert: file of `<SHA-256 fingerprint> <peer id>` lines; a listed certificate acts
    /// as the peer id next to it.
    pub client_fingerprints: String,
    /// digest: file of `peer_id:secret` lines; must not be readable by group or others.
    pub credentials: String,
    /// digest: the realm of the challenge (RFC 7616 §3.3).
    pub realm: String,
    /// digest: a nonce is accepted for this long after it was issued, seconds.
    pub nonce_lifetime_secs: u64,
    /// digest: nonces remembered at once (for nonce-count replay checks); the oldest is
    /// forgotten first, and its holder gets a fresh challenge (`stale=true`).
    pub max_nonces: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            client_ca: String::new(),
            client_fingerprints: String::new(),
            credentials: String::new(),
            realm: "ppsp-tracker".to_owned(),
            nonce_lifetime_secs: 300,
            max_nonces: 65_536,
        }
    }
}

impl AuthConfig {
    /// Consistency with `[ppstp.tls]`.
    pub(super) fn validate(&self, tls: &TlsConfig) -> Result<(), ConfigError> {
        match self.mode {
            AuthMode::None => Ok(()),
            AuthMode::ClientCert => {
                if !tls.enabled {
                    return Err(ConfigError::new(
                        "ppstp.auth.mode = \"client_cert\" needs ppstp.tls.enabled",
                    ));
                }
                if self.client_ca.is_empty() && self.client_fingerprints.is_empty() {
                    return Err(ConfigError::new(
                        "ppstp.auth.mode = \"client_cert\" needs ppstp.auth.client_ca or ppstp.auth.client_fingerprints",
                    ));
                }
                Ok(())
            }
            AuthMode::Digest => {
                if self.credentials.is_empty() {
                    return Err(ConfigError::new(
                        "ppstp.auth.mode = \"digest\" needs ppstp.auth.credentials",
                    ));
                }
                if self.realm.is_empty() || self.realm.contains(['"', '\\']) {
                    return Err(ConfigError::new(
                        "ppstp.auth.realm must be non-empty, without quotes or backslashes",
                    ));
                }
                if !(1..=86_400).contains(&self.nonce_lifetime_secs) {
                    return Err(ConfigError::new(
                        "ppstp.auth.nonce_lifetime_secs must be 1..=86400",
                    ));
                }
                if !(16..=16_777_216).contains(&self.max_nonces) {
                    return Err(ConfigError::new(
                        "ppstp.auth.max_nonces must be 16..=16777216",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The client-certificate policy for the TLS listener, in client_cert mode.
    pub fn client_cert_policy(&self) -> Option<ClientCertPolicy> {
        (self.mode == AuthMode::ClientCert).then(|| ClientCertPolicy {
            ca: (!self.client_ca.is_empty()).then(|| PathBuf::from(&self.client_ca)),
            fingerprints: (!self.client_fingerprints.is_empty())
                .then(|| PathBuf::from(&self.client_fingerprints)),
        })
    }
}
