//! PPSTP peer authentication (RFC 7846 §4), consulted for every request between HTTP framing
//! and the engine.
//!
//! Two modes, off by default:
//!
//! - **client_cert**: the TLS listener requires a client certificate (see
//!   [`crate::runtime::tls`]). The certificate is bound to one peer id: the id listed next to its
//!   SHA-256 fingerprint in `client_fingerprints`, or else, for a certificate that chains to
//!   `client_ca`, its subject common name. A listed fingerprint wins over the name.
//! - **digest**: HTTP Digest access authentication (RFC 7616) with `algorithm=SHA-256` and
//!   `qop=auth`; the Digest username is the peer id, checked against a credentials file of
//!   `peer_id:secret` lines. Nonces are random (128 bits from the thread-local CSPRNG), issued
//!   by the tracker, good for `nonce_lifetime_secs`, and remembered with the nonce counts seen
//!   (a 64-wide window, as IPsec's anti-replay window, so requests on parallel connections may
//!   arrive out of order) so that a replayed request is refused. At most `max_nonces` are
//!   remembered; the oldest is forgotten first and its holder gets `stale=true`.
//!
//! No crate on crates.io implements the server side of RFC 7616 with SHA-256 and nonce-count
//! tracking (the maintained ones, `digest_auth` and `http-auth`, are client-side), so the
//! computation (three SHA-256 hashes, RFC 7616 §3.4.1) is done here with `sha2`.
//!
//! A request without valid credentials gets error 06 (HTTP 401) with a `WWW-Authenticate:
//! Digest` challenge in digest mode; in client_cert mode a client without an accepted
//! certificate never completes the handshake. A request whose `PeerID` is not the
//! authenticated peer's gets error 03 (forbidden action, HTTP 403). Neither reaches the
//! engine, so neither changes anything.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use crate::config::{AuthConfig, AuthMode};
use crate::protocol::http::RequestHead;
use crate::runtime::tls::{check_secret_file_mode, read_fingerprint_file};
use crate::runtime::ConnCtx;

/// Certificate fingerprint -> the peer id it is bound to.
type PinnedIds = HashMap<[u8; 32], Box<[u8]>>;
/// Digest username -> HA1 (hex).
type DigestUsers = HashMap<Box<[u8]>, [u8; 64]>;

/// Who a request is authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Authentication is off: any peer id.
    Anyone,
    /// Only this peer id.
    Peer(SmallVec<[u8; 64]>),
}

impl Identity {
    /// May a request authenticated as `self` act as `peer_id`?
    pub fn permits(&self, peer_id: &[u8]) -> bool {
        match self {
            Identity::Anyone => true,
            Identity::Peer(id) => id.as_slice() == peer_id,
        }
    }
}

/// Why a request is not authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Answer 401 with this `WWW-Authenticate` header line (CRLF included).
    Challenge(String),
    /// Answer 403: a certificate bound to no peer id.
    Unbound,
}

/// The authentication policy of the PPSTP listener.
pub(crate) struct PeerAuth {
    mode: AuthMode,
    /// client_cert: fingerprint -> peer id, from `client_fingerprints`.
    pinned: RwLock<Arc<PinnedIds>>,
    fingerprints_path: Option<PathBuf>,
    digest: Option<DigestAuth>,
}

impl PeerAuth {
    /// Reads the files `config` names. Errors name the file.
    pub fn new(config: &AuthConfig) -> Result<PeerAuth, String> {
        let fingerprints_path = (config.mode == AuthMode::ClientCert
            && !config.client_fingerprints.is_empty())
        .then(|| PathBuf::from(&config.client_fingerprints));
        let digest = match config.mode {
            AuthMode::Digest => Some(DigestAuth::new(config)?),
            _ => None,
        };
        let auth = PeerAuth {
            mode: config.mode,
            pinned: RwLock::new(Arc::new(HashMap::new())),
            fingerprints_path,
            digest,
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Re-reads the fingerprint or credentials file; on error the old one stays in force.
    pub fn reload(&self) -> Result<(), String> {
        if let Some(path) = &self.fingerprints_path {
            let map = read_fingerprint_file(path)?
                .into_iter()
                .map(|(fp, id)| (fp, id.into_bytes().into_boxed_slice()))
                .collect();
            *self.pinned.write() = Arc::new(map);
        }
        if let Some(digest) = &self.digest {
            digest.reload()?;
        }
        Ok(())
    }

    /// Authentication is off.
    pub fn is_off(&self) -> bool {
        self.mode == AuthMode::None
    }

    /// Authenticates one request.
    pub fn authenticate(
        &self,
        ctx: &ConnCtx,
        head: &RequestHead<'_>,
        now: Instant,
    ) -> Result<Identity, Refusal> {
        match self.mode {
            AuthMode::None => Ok(Identity::Anyone),
            AuthMode::ClientCert => {
                let Some(cert) = ctx.client_cert else {
                    return Err(Refusal::Unbound);
                };
                if let Some(id) = self.pinned.read().get(&cert.fingerprint) {
                    return Ok(Identity::Peer(SmallVec::from_slice(id)));
                }
                match cert.common_name() {
                    Some(name) if cert.chain_verified => {
                        Ok(Identity::Peer(SmallVec::from_slice(name)))
                    }
                    _ => Err(Refusal::Unbound),
                }
            }
            AuthMode::Digest => match &self.digest {
                Some(digest) => digest.authenticate(head, now),
                None => Err(Refusal::Unbound),
            },
        }
    }
}

/// RFC 7616 Digest with SHA-256.
struct DigestAuth {
    realm: String,
    credentials_path: PathBuf,
    /// username -> HA1 = hex(SHA-256(username ":" realm ":" secret)).
    users: RwLock<Arc<DigestUsers>>,
    nonces: NonceTable,
}

impl DigestAuth {
    fn new(config: &AuthConfig) -> Result<DigestAuth, String> {
        Ok(DigestAuth {
            realm: config.realm.clone(),
            credentials_path: PathBuf::from(&config.credentials),
            users: RwLock::new(Arc::new(HashMap::new())),
            nonces: NonceTable::new(
                config.max_nonces,
                Duration::from_secs(config.nonce_lifetime_secs),
            ),
        })
    }

    fn reload(&self) -> Result<(), String> {
        let users = read_credentials(&self.credentials_path, &self.realm)?;
        *self.users.write() = Arc::new(users);
        Ok(())
    }

    fn challenge(&self, now: Instant, stale: bool) -> Refusal {
        let nonce = self.nonces.issue(now);
        Refusal::Challenge(format!(
            "WWW-Authenticate: Digest realm=\"{}\", qop=\"auth\", algorithm=SHA-256, nonce=\"{}\"{}\r\n",
            self.realm,
            crate::runtime::tls::hex(&nonce),
            if stale { ", stale=true" } else { "" }
        ))
    }

    fn authenticate(&self, head: &RequestHead<'_>, now: Instant) -> Result<Identity, Refusal> {
        let Some(value) = head.authorization else {
            return Err(self.challenge(now, false));
        };
        let Some(creds) = DigestCredentials::parse(value) else {
            return Err(self.challenge(now, false));
        };
        let ha1 = {
            let users = self.users.read();
            match users.get(creds.username.as_ref()) {
                Some(ha1) => *ha1,
                None => return Err(self.challenge(now, false)),
            }
        };
        let acceptable = creds.realm.as_ref() == self.realm.as_bytes()
            && creds
                .algorithm
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(b"SHA-256"))
            && creds.qop.as_deref() == Some(b"auth".as_slice())
            && creds.uri.as_ref() == head.target.as_bytes()
            && creds.nc.len() == 8
            && !creds.userhash;
        if !acceptable {
            return Err(self.challenge(now, false));
        }
        let expected = response(
            &ha1,
            head.method.as_bytes(),
            &creds.uri,
            &creds.nonce,
            &creds.nc,
            &creds.cnonce,
        );
        if !constant_time_eq(&expected, &creds.response) {
            return Err(self.challenge(now, false));
        }
        // The secret is right; now the nonce must be ours, fresh, and this count unused.
        let nc = std::str::from_utf8(&creds.nc)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok());
        let nonce = parse_nonce(&creds.nonce);
        match (nonce, nc) {
            (Some(nonce), Some(nc)) => match self.nonces.use_count(&nonce, nc, now) {
                NonceUse::Fresh => Ok(Identity::Peer(SmallVec::from_slice(&creds.username))),
                NonceUse::Stale => Err(self.challenge(now, true)),
                NonceUse::Replayed => Err(self.challenge(now, false)),
            },
            _ => Err(self.challenge(now, true)),
        }
    }
}

/// Reads `peer_id:secret` lines (blank lines and `#` comments ignored) into username -> HA1.
fn read_credentials(path: &Path, realm: &str) -> Result<DigestUsers, String> {
    check_secret_file_mode(path).map_err(|e| format!("credentials {e}"))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read credentials {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, secret)) = line.split_once(':') else {
            return Err(format!(
                "{}:{}: expected `peer_id:secret`",
                path.display(),
                i + 1
            ));
        };
        if user.is_empty() || user.contains('"') || user.contains('\\') {
            return Err(format!(
                "{}:{}: the peer id is empty or has a quote or backslash",
                path.display(),
                i + 1
            ));
        }
        let ha1 = hex_sha256(&[user.as_bytes(), realm.as_bytes(), secret.as_bytes()]);
        users.insert(user.as_bytes().to_vec().into_boxed_slice(), ha1);
    }
    Ok(users)
}

/// hex(SHA-256(parts joined by `:`)), RFC 7616 §3.4.1's `H(...)` with `KD` framing.
fn hex_sha256(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part);
    }
    let digest: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 64];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// RFC 7616 §3.4.1 with qop=auth: KD(HA1, nonce:nc:cnonce:qop:HA2), HA2 = H(method:uri).
fn response(
    ha1: &[u8; 64],
    method: &[u8],
    uri: &[u8],
    nonce: &[u8],
    nc: &[u8],
    cnonce: &[u8],
) -> [u8; 64] {
    let ha2 = hex_sha256(&[method, uri]);
    hex_sha256(&[ha1, nonce, nc, cnonce, b"auth", &ha2])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Case-insensitive for hex digits: fold ASCII upper case to lower case.
    a.iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
        == 0
}

fn parse_nonce(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in text.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The parameters of an `Authorization: Digest ...` header (RFC 7616 §3.4).
#[derive(Debug, Default)]
struct DigestCredentials<'a> {
    username: Cow<'a, [u8]>,
    realm: Cow<'a, [u8]>,
    nonce: Cow<'a, [u8]>,
    uri: Cow<'a, [u8]>,
    response: Cow<'a, [u8]>,
    algorithm: Option<Cow<'a, [u8]>>,
    cnonce: Cow<'a, [u8]>,
    qop: Option<Cow<'a, [u8]>>,
    nc: Cow<'a, [u8]>,
    userhash: bool,
}

impl<'a> DigestCredentials<'a> {
    /// Parses `Digest k=v, k="v", ...`; `None` for another scheme, a syntax error, a missing
    /// mandatory parameter, or a repeated one.
    fn parse(value: &'a [u8]) -> Option<DigestCredentials<'a>> {
        let rest = value.strip_prefix(b"Digest").or_else(|| {
            (value.len() >= 6 && value[..6].eq_ignore_ascii_case(b"Digest")).then(|| &value[6..])
        })?;
        if !rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        let mut creds = DigestCredentials::default();
        let mut seen = 0u16;
        let mut p = rest;
        loop {
            p = skip_ows_commas(p);
            if p.is_empty() {
                break;
            }
            let name_len = p.iter().position(|&b| b == b'=')?;
            let name = trim(&p[..name_len]);
            p = skip_ows(&p[name_len + 1..]);
            let (value, after) = if p.first() == Some(&b'"') {
                quoted(&p[1..])?
            } else {
                let end = p
                    .iter()
                    .position(|&b| b == b',' || b == b' ' || b == b'\t')
                    .unwrap_or(p.len());
                (Cow::Borrowed(&p[..end]), &p[end..])
            };
            p = after;
            let (bit, slot): (u16, Option<&mut Cow<'a, [u8]>>) = match name {
                n if n.eq_ignore_ascii_case(b"username") => (1, Some(&mut creds.username)),
                n if n.eq_ignore_ascii_case(b"realm") => (2, Some(&mut creds.realm)),
                n if n.eq_ignore_ascii_case(b"nonce") => (4, Some(&mut creds.nonce)),
                n if n.eq_ignore_ascii_case(b"uri") => (8, Some(&mut creds.uri)),
                n if n.eq_ignore_ascii_case(b"response") => (16, Some(&mut creds.response)),
                n if n.eq_ignore_ascii_case(b"cnonce") => (32, Some(&mut creds.cnonce)),
                n if n.eq_ignore_ascii_case(b"nc") => (64, Some(&mut creds.nc)),
                n if n.eq_ignore_ascii_case(b"algorithm") => {
                    creds.algorithm = Some(value.clone());
                    (128, None)
                }
                n if n.eq_ignore_ascii_case(b"qop") => {
                    creds.qop = Some(value.clone());
                    (256, None)
                }
                n if n.eq_ignore_ascii_case(b"userhash") => {
                    creds.userhash = value.eq_ignore_ascii_case(b"true");
                    (512, None)
                }
                // username* (RFC 8187 encoding) is not supported: refuse rather than ignore.
                n if n.eq_ignore_ascii_case(b"username*") => return None,
                _ => (0, None),
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
            }
            if let Some(slot) = slot {
                *slot = value;
            }
        }
        // username, realm, nonce, uri, response, cnonce and nc are all required with qop.
        (seen & 127 == 127).then_some(creds)
    }
}

/// Parses an `Authorization` header value as Digest credentials (RFC 7616 §3.4), the way
/// every authenticated request is parsed, and returns the lengths in bytes of the username,
/// realm, nonce, uri, response, cnonce and nc parameters (after unquoting), or `None` when the
/// value is another scheme, malformed, misses a mandatory parameter or repeats one. The entry
/// point of the `digest_credentials` fuzz target.
#[doc(hidden)]
pub fn digest_credentials_lengths(value: &[u8]) -> Option<[usize; 7]> {
    let c = DigestCredentials::parse(value)?;
    Some([
        c.username.len(),
        c.realm.len(),
        c.nonce.len(),
        c.uri.len(),
        c.response.len(),
        c.cnonce.len(),
        c.nc.len(),
    ])
}

fn skip_ows(mut p: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = p {
        p = rest;
    }
    p
}

fn skip_ows_commas(mut p: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b',', rest @ ..] = p {
        p = rest;
    }
    p
}

fn trim(p: &[u8]) -> &[u8] {
    let p = skip_ows(p);
    let end = p
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &p[..end]
}

/// A quoted-string body after the opening quote: its value (unescaped) and the rest after the
/// closing quote.
fn quoted(p: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    let mut i = 0;
    let mut escaped = false;
    while i < p.len() {
        match p[i] {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => {
                let raw = &p[..i];
                let value = if escaped {
                    let mut out = Vec::with_capacity(raw.len());
                    let mut j = 0;
                    while j < raw.len() {
                        if raw[j] == b'\\' && j + 1 < raw.len() {
                            j += 1;
                        }
                        out.push(raw[j]);
                        j += 1;
                    }
                    Cow::Owned(out)
                } else {
                    Cow::Borrowed(raw)
                };
                return Some((value, &p[i + 1..]));
            }
            _ => i += 1,
        }
    }
    None
}

/// What a nonce count is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonceUse {
    /// Ours, within its lifetime, and this count was not used before.
    Fresh,
    /// Not ours, expired, or forgotten: the client should retry with a new nonce.
    Stale,
    /// This count was used before on this nonce (or is too old to tell).
    Replayed,
}

struct NonceState {
    issued: Instant,
    /// Highest nonce count seen (0: none yet).
    max_nc: u32,
    /// Bit `i`: count `max_nc - i` was seen.
    window: u64,
}

#[derive(Default)]
struct NonceShard {
    map: HashMap<[u8; 16], NonceState>,
    /// Insertion order (oldest first), in step with `map`.
    order: VecDeque<[u8; 16]>,
}

/// Issued nonces and the counts used on them, in shards so workers rarely contend. Memory is
/// bounded by `max_nonces` entries.
struct NonceTable {
    shards: Box<[Mutex<NonceShard>]>,
    per_shard: usize,
    lifetime: Duration,
}

const NONCE_SHARDS: usize = 16;

impl NonceTable {
    fn new(max_nonces: usize, lifetime: Duration) -> NonceTable {
        NonceTable {
            shards: (0..NONCE_SHARDS)
                .map(|_| Mutex::new(NonceShard::default()))
                .collect(),
            per_shard: (max_nonces / NONCE_SHARDS).max(1),
            lifetime,
        }
    }

    fn shard(&self, nonce: &[u8; 16]) -> &Mutex<NonceShard> {
        &self.shards[usize::from(nonce[0]) % self.shards.len()]
    }

    /// A new nonce, remembered from `now`.
    fn issue(&self, now: Instant) -> [u8; 16] {
        let nonce: [u8; 16] = rand::random();
        let mut shard = self.shard(&nonce).lock();
        // Forget expired nonces, then the oldest ones while the shard is full.
        while let Some(oldest) = shard.order.front().copied() {
            let expired = shard.map.get(&oldest).map_or(true, |s| {
                now.saturating_duration_since(s.issued) >= self.lifetime
            });
            if !expired && shard.map.len() < self.per_shard {
                break;
            }
            shard.order.pop_front();
            shard.map.remove(&oldest);
        }
        shard.map.insert(
            nonce,
            NonceState {
                issued: now,
                max_nc: 0,
                window: 0,
            },
        );
        shard.order.push_back(nonce);
        nonce
    }

    /// Records count `nc` on `nonce` if it was not used before.
    fn use_count(&self, nonce: &[u8; 16], nc: u32, now: Instant) -> NonceUse {
        let mut shard = self.shard(nonce).lock();
        let Some(state) = shard.map.get_mut(nonce) else {
            return NonceUse::Stale;
        };
        if now.saturating_duration_since(state.issued) >= self.lifetime {
            return NonceUse::Stale;
        }
        if nc == 0 {
            return NonceUse::Replayed;
        }
        if nc > state.max_nc {
            let shift = nc - state.max_nc;
            state.window = if shift >= 64 {
                0
            } else {
                state.window << shift
            } | 1;
            state.max_nc = nc;
            return NonceUse::Fresh;
        }
        let age = state.max_nc - nc;
        if age >= 64 || state.window & (1u64 << age) != 0 {
            return NonceUse::Replayed;
        }
        state.window |= 1u64 << age;
        NonceUse::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_section_3_9_1_sha256_example() {
        // RFC 7616 §3.9.1: Mufasa / Circle of Life, realm http-auth@example.org, GET /dir/index.html.
        let ha1 = hex_sha256(&[b"Mufasa", b"http-auth@example.org", b"Circle of Life"]);
        let r = response(
            &ha1,
            b"GET",
            b"/dir/index.html",
            b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            b"00000001",
            b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn credentials_header_parses_quoted_and_token_values() {
        let h = br#"Digest username="peer-1", realm="ppsp-tracker", nonce="00112233445566778899aabbccddeeff", uri="/", cnonce="abc", nc=00000001, qop=auth, response="dead", algorithm=SHA-256"#;
        let c = DigestCredentials::parse(h).unwrap();
        assert_eq!(c.username.as_ref(), b"peer-1");
        assert_eq!(c.nc.as_ref(), b"00000001");
        assert_eq!(c.qop.as_deref(), Some(b"auth".as_slice()));
        assert_eq!(c.algorithm.as_deref(), Some(b"SHA-256".as_slice()));
        assert!(DigestCredentials::parse(b"Basic abc").is_none());
        assert!(DigestCredentials::parse(br#"Digest username="a""#).is_none());
        let twice = br#"Digest username="a", username="b", realm="r", nonce="n", uri="/", cnonce="c", nc=1, response="x""#;
        assert!(DigestCredentials::parse(twice).is_none());
        let escaped = br#"Digest username="a\"b", realm="r", nonce="n", uri="/", cnonce="c", nc=1, response="x""#;
        assert_eq!(
            DigestCredentials::parse(escaped).unwrap().username.as_ref(),
            b"a\"b"
        );
    }

    #[test]
    fn nonce_counts_cannot_be_replayed_and_may_arrive_out_of_order() {
        let t = NonceTable::new(64, Duration::from_secs(60));
        let now = Instant::now();
        let n = t.issue(now);
        assert_eq!(t.use_count(&n, 1, now), NonceUse::Fresh);
        assert_eq!(t.use_count(&n, 1, now), NonceUse::Replayed);
        assert_eq!(t.use_count(&n, 3, now), NonceUse::Fresh);
        assert_eq!(t.use_count(&n, 2, now), NonceUse::Fresh, "late but unused");
        assert_eq!(t.use_count(&n, 2, now), NonceUse::Replayed);
        assert_eq!(t.use_count(&n, 200, now), NonceUse::Fresh);
        assert_eq!(
            t.use_count(&n, 100, now),
            NonceUse::Replayed,
            "outside the window"
        );
        assert_eq!(t.use_count(&n, 0, now), NonceUse::Replayed);
        assert_eq!(t.use_count(&[7; 16], 1, now), NonceUse::Stale, "not issued");
        let later = now + Duration::from_secs(61);
        assert_eq!(t.use_count(&n, 201, later), NonceUse::Stale, "expired");
    }

    #[test]
    fn the_nonce_table_stays_bounded() {
        let t = NonceTable::new(64, Duration::from_secs(3600));
        let now = Instant::now();
        let first = t.issue(now);
        for _ in 0..10_000 {
            t.issue(now);
        }
        assert!(t.len() <= 64, "{}", t.len());
        assert_eq!(
            t.use_count(&first, 1, now),
            NonceUse::Stale,
            "oldest forgotten"
        );
    }
}
