//! The swarm access list: which swarms the tracker serves, for every front-end at once.
//!
//! A list file holds hex swarm ids (BitTorrent info-hashes, or RFC 7574 swarm ids written in
//! hex), one per line; blank lines and `#` comments are ignored; hex is case-insensitive. In
//! `allow` mode only listed swarms are served, in `deny` mode listed swarms are refused; `off`
//! serves everything without looking. PPSTP swarm ids are strings and are compared, lower-cased,
//! with the hex entries; BitTorrent info-hashes are hex-encoded first.
//!
//! Refusals: PPSTP 03 (forbidden), a BEP 15 error, an HTTP `failure reason`. Leaving a swarm is
//! never refused, so that peers can always go away.
//!
//! [`AccessControl`] holds the current list behind a read-write lock of an `Arc`: a request
//! takes the read lock once and clones nothing but the `Arc` pointer; [`AccessControl::reload`]
//! (on SIGHUP) parses the new file first and swaps it in only when it is valid, so a bad file
//! keeps the old list and no request is dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::engine::{ActionKind, RequestKind, StatTarget, SwarmId, MAX_ID_BYTES};

/// `[access_list] mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Every swarm is served; no file is read.
    #[default]
    Off,
    /// Only the listed swarms are served.
    Allow,
    /// The listed swarms are refused.
    Deny,
}

/// A parsed list: lower-case hex entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessList {
    mode: AccessMode,
    entries: HashSet<Box<[u8]>>,
}

/// Longest entry: the hex form of the longest swarm id.
const MAX_HEX: usize = 2 * MAX_ID_BYTES;

impl AccessList {
    /// A list that serves everything.
    pub fn off() -> Self {
        AccessList::default()
    }

    /// Parses a list file's text. Errors name the line.
    pub fn parse(mode: AccessMode, text: &str) -> Result<Self, String> {
        let mut entries = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.len() % 2 != 0
                || line.len() > MAX_HEX
                || !line.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!(
                    "line {}: \"{line}\" is not a hex swarm id (an even number of hex digits, at most {MAX_HEX})",
                    i + 1
                ));
            }
            entries.insert(line.to_ascii_lowercase().into_bytes().into_boxed_slice());
        }
        Ok(AccessList { mode, entries })
    }

    /// Reads and parses a list file.
    pub fn load(mode: AccessMode, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        AccessList::parse(mode, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn listed_hex(&self, hex: &[u8]) -> bool {
        self.entries.contains(hex)
    }

    fn verdict(&self, listed: bool) -> bool {
        match self.mode {
            AccessMode::Off => true,
            AccessMode::Allow => listed,
            AccessMode::Deny => !listed,
        }
    }

    /// Whether the swarm of a BitTorrent info-hash is served.
    pub fn permits_info_hash(&self, info_hash: &[u8]) -> bool {
        if self.mode == AccessMode::Off {
            return true;
        }
        let mut hex = [0u8; MAX_HEX];
        let len = write_hex(info_hash, &mut hex);
        self.verdict(self.listed_hex(hex.get(..len).unwrap_or(&[])))
    }

    /// Whether a PPSTP swarm id (a string, compared lower-cased) is served.
    pub fn permits_swarm_string(&self, swarm_id: &[u8]) -> bool {
        if self.mode == AccessMode::Off {
            return true;
        }
        let mut lower = [0u8; MAX_ID_BYTES];
        let Some(buf) = lower.get_mut(..swarm_id.len()) else {
            // Longer than any id the engine accepts: it cannot be listed.
            return self.verdict(false);
        };
        buf.copy_from_slice(swarm_id);
        buf.make_ascii_lowercase();
        self.verdict(self.listed_hex(buf))
    }

    /// Whether every swarm a PPSTP request names (except in LEAVE actions) is served.
    pub fn permits_request(&self, kind: &RequestKind) -> bool {
        if self.mode == AccessMode::Off {
            return true;
        }
        let ok = |id: &SwarmId| self.permits_swarm_string(id.as_bytes());
        match kind {
            RequestKind::Connect { actions, .. } => actions
                .iter()
                .all(|a| a.action == ActionKind::Leave || ok(&a.swarm_id)),
            RequestKind::Find { swarm_id, .. }
            | RequestKind::Join { swarm_id, .. }
            | RequestKind::JoinChunk { swarm_id, .. }
            | RequestKind::Announce { swarm_id, .. } => ok(swarm_id),
            RequestKind::StatReport { stats } => {
                stats.iter().all(|s| s.swarm_id.as_ref().map_or(true, ok))
            }
            RequestKind::StatQuery {
                target: StatTarget::Swarm(swarm_id),
            } => ok(swarm_id),
            RequestKind::StatQuery {
                target: StatTarget::Peer(_),
            }
            | RequestKind::Leave { .. }
            | RequestKind::Disconnect { .. }
            | RequestKind::Keepalive => true,
        }
    }
}

/// Lower-case hex of `bytes` into `out`; returns the length written (cut at `out`'s size).
fn write_hex(bytes: &[u8], out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
        n += 2;
    }
    n
}

/// The current list and where it comes from; shared by every worker.
#[derive(Debug)]
pub struct AccessControl {
    /// Mode and file in force; changed only by [`AccessControl::reconfigure`].
    source: RwLock<(AccessMode, Option<PathBuf>)>,
    /// Whether the mode in force is `off` (read on the hot path without a lock).
    off: AtomicBool,
    current: RwLock<Arc<AccessList>>,
}

impl AccessControl {
    /// Loads the list (nothing for `off`). An unreadable or invalid file is an error.
    pub fn new(mode: AccessMode, path: Option<&Path>) -> Result<Self, String> {
        let list = load_list(mode, path)?;
        Ok(AccessControl {
            source: RwLock::new((mode, path.map(Path::to_path_buf))),
            off: AtomicBool::new(mode == AccessMode::Off),
            current: RwLock::new(Arc::new(list)),
        })
    }

    /// Serves everything.
    pub fn off() -> Self {
        AccessControl {
            source: RwLock::new((AccessMode::Off, None)),
            off: AtomicBool::new(true),
            current: RwLock::new(Arc::new(AccessList::off())),
        }
    }

    /// The list in force now (one read lock, one `Arc` clone).
    pub fn current(&self) -> Arc<AccessList> {
        self.current.read().clone()
    }

    pub fn is_off(&self) -> bool {
        self.off.load(Ordering::Acquire)
    }

    /// Re-reads the file and swaps the new list in; on error the old list stays in force and
    /// the error is returned. Returns the number of entries.
    pub fn reload(&self) -> Result<usize, String> {
        let (mode, path) = self.source.read().clone();
        self.reconfigure(mode, path.as_deref())
    }

    /// Puts a new mode and file in force (a configuration reload): the new list is read
    /// completely first, then swapped in at once, so every request sees either the old list
    /// or the new one. On error nothing changes. Returns the number of entries.
    pub fn reconfigure(&self, mode: AccessMode, path: Option<&Path>) -> Result<usize, String> {
        let list = load_list(mode, path)?;
        let n = list.len();
        let mut source = self.source.write();
        // Turning the list on: the list goes in first, then the flag; turning it off, the
        // flag first. A request never sees "on" with a list of the wrong mode.
        if mode == AccessMode::Off {
            self.off.store(true, Ordering::Release);
            *self.current.write() = Arc::new(list);
        } else {
            *self.current.write() = Arc::new(list);
            self.off.store(false, Ordering::Release);
        }
        *source = (mode, path.map(Path::to_path_buf));
        Ok(n)
    }
}

/// The list for `mode` from `path` (nothing for `off`).
fn load_list(mode: AccessMode, path: Option<&Path>) -> Result<AccessList, String> {
    match (mode, path) {
        (AccessMode::Off, _) => Ok(AccessList::off()),
        (_, Some(path)) => AccessList::load(mode, path),
        (_, None) => Err("access_list.path is required unless mode = \"off\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PeerMode, SwarmAction};

    const HASH: [u8; 20] = [0xab; 20];

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn files_parse_with_comments_blank_lines_and_any_case() {
        let text = format!(
            "# allowed swarms\n\n{}  # the test hash\nDEADBEEF\n",
            hex(&HASH).to_uppercase()
        );
        let list = AccessList::parse(AccessMode::Allow, &text).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.permits_info_hash(&HASH));
        assert!(!list.permits_info_hash(&[0xcd; 20]));
        assert!(list.permits_swarm_string(b"deadbeef"));
        assert!(list.permits_swarm_string(b"DeadBeef"));
        assert!(!list.permits_swarm_string(b"deadbee"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in ["abc", "xyz0", &"ab".repeat(65)] {
            let e = AccessList::parse(AccessMode::Deny, &format!("# ok\n{bad}\n")).unwrap_err();
            assert!(e.starts_with("line 2:"), "{e}");
        }
    }

    #[test]
    fn deny_mode_refuses_listed_and_off_serves_everything() {
        let list = AccessList::parse(AccessMode::Deny, &hex(&HASH)).unwrap();
        assert!(!list.permits_info_hash(&HASH));
        assert!(list.permits_info_hash(&[0; 20]));
        let off = AccessList::parse(AccessMode::Off, &hex(&HASH)).unwrap();
        assert!(off.permits_info_hash(&HASH));
        // A swarm id longer than any engine id is never listed.
        let long = [b'a'; 100];
        assert!(list.permits_swarm_string(&long));
        let allow = AccessList::parse(AccessMode::Allow, "aa").unwrap();
        assert!(!allow.permits_swarm_string(&long));
    }

    #[test]
    fn ppstp_requests_are_checked_except_leaves() {
        let list = AccessList::parse(AccessMode::Deny, "6e6f").unwrap();
        let denied = SwarmId::new(b"6E6F").unwrap();
        let fine = SwarmId::new(b"aa").unwrap();
        let connect = |action, id| RequestKind::Connect {
            peer_num: None,
            addrs: Vec::new(),
            actions: vec![SwarmAction {
                swarm_id: id,
                action,
                mode: PeerMode::Leech,
            }],
        };
        assert!(!list.permits_request(&connect(ActionKind::Join, denied)));
        assert!(list.permits_request(&connect(ActionKind::Join, fine)));
        assert!(list.permits_request(&connect(ActionKind::Leave, denied)));
        assert!(list.permits_request(&RequestKind::Leave { swarm_id: denied }));
        assert!(!list.permits_request(&RequestKind::Find {
            swarm_id: denied,
            peer_num: None,
            chunks: Vec::new(),
        }));
    }

    #[test]
    fn reload_swaps_a_good_file_and_keeps_the_old_list_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, hex(&HASH)).unwrap();
        let control = AccessControl::new(AccessMode::Allow, Some(&path)).unwrap();
        assert!(control.current().permits_info_hash(&HASH));
        let held = control.current();

        std::fs::write(&path, format!("{}\n", hex(&[0xcd; 20]))).unwrap();
        assert_eq!(control.reload(), Ok(1));
        assert!(!control.current().permits_info_hash(&HASH));
        assert!(control.current().permits_info_hash(&[0xcd; 20]));
        // A request that took the list before the reload finishes with it.
        assert!(held.permits_info_hash(&HASH));

        std::fs::write(&path, "not hex\n").unwrap();
        assert!(control.reload().is_err());
        assert!(control.current().permits_info_hash(&[0xcd; 20]));
        std::fs::remove_file(&path).unwrap();
        assert!(control.reload().is_err());
        assert!(control.current().permits_info_hash(&[0xcd; 20]));

        assert!(AccessControl::new(AccessMode::Allow, None).is_err());
        assert!(AccessControl::new(AccessMode::Off, None).unwrap().is_off());
    }
}
