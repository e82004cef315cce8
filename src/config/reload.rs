//! What a configuration reload (SIGHUP) may change while the tracker runs, and which changed
//! keys need a restart.
//!
//! The running configuration and the re-read one are compared key by key (as TOML tables, so
//! every leaf has its dotted name). Keys under [`RELOADABLE`] are put in force at once; every
//! other changed key is reported by name as needing a restart and keeps its running value.

use super::Config;

/// Keys (or key prefixes ending a table name) put in force by a reload:
///
/// - `access_list.*`: the mode and the file (read whole, then swapped in at once);
/// - `log.level`: the `tracing` filter (`RUST_LOG`, when set, still wins).
///
/// TLS certificates, keys and peer credentials are re-read from their configured paths on
/// every reload as well; changing the paths themselves needs a restart.
pub const RELOADABLE: &[&str] = &["access_list.mode", "access_list.path", "log.level"];

/// The keys that differ between two configurations, split by what a reload can do with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Changed keys a reload puts in force, dotted (`log.level`), sorted.
    pub reloadable: Vec<String>,
    /// Changed keys that keep their running value until a restart, dotted, sorted.
    pub needs_restart: Vec<String>,
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.reloadable.is_empty() && self.needs_restart.is_empty()
    }

    /// Whether `key` changed and is reloadable.
    pub fn reloads(&self, key: &str) -> bool {
        self.reloadable.iter().any(|k| k == key)
    }
}

impl Config {
    /// The keys whose values differ between `self` (running) and `new` (re-read).
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        let mut changed = Vec::new();
        match (toml::Value::try_from(self), toml::Value::try_from(new)) {
            (Ok(a), Ok(b)) => leaves_differing(&a, &b, "", &mut changed),
            // Serialising plain structs cannot fail; if it ever did, everything needs a restart.
            _ => changed.push("(configuration)".to_owned()),
        }
        changed.sort();
        let (reloadable, needs_restart) = changed
            .into_iter()
            .partition(|k| RELOADABLE.contains(&k.as_str()));
        ConfigDiff {
            reloadable,
            needs_restart,
        }
    }
}

fn leaves_differing(a: &toml::Value, b: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match (ta.get(key), tb.get(key)) {
                    (Some(va), Some(vb)) => leaves_differing(va, vb, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ => {
            if a != b {
                out.push(prefix.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_changed_key_and_splits_reloadable_from_restart() {
        let old = Config::default();
        assert!(old.diff(&old.clone()).is_empty());
        let mut new = old.clone();
        new.log.level = "debug".to_owned();
        new.access_list.path = "/etc/list".to_owned();
        new.server.workers = 7;
        new.ppstp.tls.cert = "/etc/cert.pem".to_owned();
        new.bt_udp.listen.push("[::1]:6969".to_owned());
        let d = old.diff(&new);
        assert_eq!(d.reloadable, vec!["access_list.path", "log.level"]);
        assert_eq!(
            d.needs_restart,
            vec!["bt_udp.listen", "ppstp.tls.cert", "server.workers"]
        );
        assert!(d.reloads("log.level"));
        assert!(!d.reloads("server.workers"));
    }
}
