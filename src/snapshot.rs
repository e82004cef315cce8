//! Snapshot files of the registrations, for warm restarts.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "PPSPSNAP"
//!      8     4  format version (2; version 1 files are read too)
//!     12     8  payload length in bytes
//!     20     4  CRC-32 (IEEE) of the payload
//!     24     n  payload: postcard encoding of `Body`
//! ```
//!
//! `Body` holds the wall-clock time of writing (Unix milliseconds), the engine's
//! registrations ([`Registration`]), each with the milliseconds left on its timer then, and
//! (since version 2) each swarm's completion count ([`SwarmCompletions`]). On
//! load, the time the tracker was down (now minus the time of writing) is taken off every
//! registration, so each keeps its remaining lifetime; those whose lifetime ran out meanwhile
//! are dropped.
//!
//! A file is written to a temporary file beside the target, fsynced, renamed over the target
//! and the directory fsynced, so a crash leaves the old snapshot or the new one, never a
//! mixture. A file that is not a snapshot, of another format version, truncated, or whose
//! checksum or encoding is wrong is refused whole with a message saying which.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{Registration, SwarmCompletions};

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"PPSPSNAP";
/// The format version this build writes; it reads this one and version 1 (written before
/// completion counts were carried).
pub const FORMAT_VERSION: u32 = 2;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;
/// Largest payload a reader accepts (a guard against a length field that would allocate
/// without bound): 4 GiB.
pub const MAX_PAYLOAD_BYTES: u64 = 4 << 30;

/// The payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// Wall-clock time of writing, Unix milliseconds.
    pub written_unix_ms: u64,
    pub registrations: Vec<Registration>,
    /// Completion counts of the swarms that have one (empty in a version 1 file).
    pub completions: Vec<SwarmCompletions>,
}

/// The payload of a version 1 file.
#[derive(Deserialize)]
struct BodyV1 {
    written_unix_ms: u64,
    registrations: Vec<Registration>,
}

/// Why a snapshot was refused. Each message says what is wrong with the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a ppsp-tracker snapshot (the file does not start with \"PPSPSNAP\")")]
    Foreign,
    #[error("snapshot format version {found}; this build reads versions 1 to {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("truncated snapshot: {expected} payload bytes announced, {found} present")]
    Truncated { expected: u64, found: u64 },
    #[error("snapshot has {extra} bytes after its payload")]
    Trailing { extra: u64 },
    #[error("snapshot checksum mismatch (CRC-32 {stored:08x} stored, {computed:08x} computed): the file is damaged")]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot payload does not decode: {0}")]
    Decode(String),
    #[error("{path}: {error}")]
    Io { path: String, error: String },
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The whole file for `body`.
pub fn encode(body: &Body) -> Vec<u8> {
    // Encoding plain data into a vector cannot fail; an empty payload would be refused on
    // load rather than half-loaded.
    let payload = postcard::to_stdvec(body).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a whole file; nothing is returned unless every check passes.
pub fn decode(bytes: &[u8]) -> Result<Body, SnapshotError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Foreign);
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(SnapshotError::Truncated {
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    };
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = u32_at(8);
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::Version { found: version });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    let expected = u64::from_le_bytes(len);
    let stored = u32_at(20);
    let found = (bytes.len() - HEADER_LEN) as u64;
    if expected > MAX_PAYLOAD_BYTES || found < expected {
        return Err(SnapshotError::Truncated { expected, found });
    }
    if found > expected {
        return Err(SnapshotError::Trailing {
            extra: found - expected,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let decoded = if version == 1 {
        postcard::from_bytes::<BodyV1>(payload).map(|v1| Body {
            written_unix_ms: v1.written_unix_ms,
            registrations: v1.registrations,
            completions: Vec::new(),
        })
    } else {
        postcard::from_bytes(payload)
    };
    decoded.map_err(|e| SnapshotError::Decode(e.to_string()))
}

fn io_error(path: &Path, e: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// Writes `body` to `path` atomically: a temporary file in the same directory, fsync,
/// rename, fsync of the directory. Returns the bytes written.
pub fn write(path: &Path, body: &Body) -> Result<u64, SnapshotError> {
    let bytes = encode(body);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".to_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    Ok(bytes.len() as u64)
}

/// Reads and decodes the snapshot at `path`; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<Body>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            written_unix_ms: 1_700_000_000_000,
            registrations: vec![
                Registration::BitTorrent {
                    info_hash: vec![7; 20],
                    addr: "[::1]:6881".parse().unwrap(),
                    seeder: true,
                    remaining_ms: 1234,
                },
                Registration::Ppstp {
                    peer_id: b"peer".to_vec(),
                    source_ip: "192.0.2.1".parse().unwrap(),
                    addrs: vec![],
                    swarms: vec![(b"s".to_vec(), false)],
                    remaining_ms: 99,
                },
            ],
            completions: vec![SwarmCompletions {
                swarm_id: vec![7; 20],
                bittorrent: true,
                completed: 3,
            }],
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_named() {
        let bytes = encode(&body());
        assert_eq!(decode(&bytes), Ok(body()));
        assert_eq!(decode(b"{\"json\": 1}"), Err(SnapshotError::Foreign));
        assert_eq!(decode(b""), Err(SnapshotError::Foreign));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(SnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..10]),
            Err(SnapshotError::Truncated { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(SnapshotError::Trailing { extra: 1 }));
        for bit in [
            HEADER_LEN * 8,
            bytes.len() * 8 - 1,
            (HEADER_LEN + 5) * 8 + 3,
        ] {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode(&flipped), Err(SnapshotError::Checksum { .. })),
                "bit {bit}"
            );
        }
        let mut v3 = bytes.clone();
        v3[8] = 3;
        assert_eq!(decode(&v3), Err(SnapshotError::Version { found: 3 }));
        let e = decode(&v3).unwrap_err().to_string();
        assert!(e.contains("version 3"), "{e}");
    }

    #[test]
    fn a_version_1_file_is_read_without_completions() {
        #[derive(Serialize)]
        struct V1 {
            written_unix_ms: u64,
            registrations: Vec<Registration>,
        }
        let want = Body {
            completions: Vec::new(),
            ..body()
        };
        let payload = postcard::to_stdvec(&V1 {
            written_unix_ms: want.written_unix_ms,
            registrations: want.registrations.clone(),
        })
        .unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        file.extend_from_slice(&payload);
        assert_eq!(decode(&file), Ok(want));
    }

    #[test]
    fn write_is_atomic_and_read_finds_no_file_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.bin");
        assert_eq!(read(&path), Ok(None));
        let n = write(&path, &body()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), n);
        assert_eq!(read(&path), Ok(Some(body())));
        // Only the snapshot is left in the directory (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
