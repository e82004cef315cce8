//! `[access_list]`: which swarms the tracker serves (see `crate::access_list`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::access_list::AccessMode;

/// `[access_list]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessListConfig {
    /// `"off"` (serve every swarm), `"allow"` (only listed swarms) or `"deny"` (all but the
    /// listed swarms).
    pub mode: AccessMode,
    /// File of hex swarm ids / info-hashes, one per line, `#` comments. Re-read on SIGHUP.
    pub path: String,
}

impl AccessListConfig {
    /// The list file, when one is configured.
    pub fn path(&self) -> Option<PathBuf> {
        (!self.path.trim().is_empty()).then(|| PathBuf::from(self.path.trim()))
    }
}

impl Config {
    /// The access list's checks (called by [`Config::validate`]); the file itself is read when
    /// the server starts.
    pub(super) fn validate_access_list(&self) -> Result<(), ConfigError> {
        let a = &self.access_list;
        if a.mode != AccessMode::Off && a.path().is_none() {
            return Err(ConfigError::new(
                "access_list.path must name a file when access_list.mode is \"allow\" or \"deny\"",
            ));
        }
        Ok(())
    }
}
