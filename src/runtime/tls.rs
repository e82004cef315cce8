//! TLS for stream listeners: a sans-IO layer between socket bytes and the services' plaintext.
//!
//! A [`TlsAcceptor`] holds one listener's TLS settings and the rustls configuration built from
//! them (certificate chain, private key, client-certificate policy). [`TlsAcceptor::reload`]
//! re-reads the files and swaps the configuration: new connections get the new one, open
//! connections keep the one they were accepted with, so nothing is dropped.
//!
//! A [`TlsConn`] wraps a `rustls::ServerConnection`. It never touches a socket itself: the
//! back-end passes whatever implements `Read`/`Write` for the ciphertext side (the socket for
//! the epoll loop, in-memory buffers for a completion-based back-end), and gets plaintext in
//! and out, so the connection buffers, limits and services above stay as they are.
//!
//! Policy (RFC 7525 / RFC 9325, RFC 8996): TLS 1.3 and TLS 1.2 only; TLS 1.2 only with
//! ECDHE key exchange and AEAD ciphers (AES-GCM, ChaCha20-Poly1305), which is all rustls
//! implements; no compression, no renegotiation (rustls has neither). ALPN `http/1.1`.
//!
//! Client certificates (RFC 7846 §4, TLS client authentication), when configured, are
//! required: a certificate is accepted when its SHA-256 fingerprint is listed, or when it
//! chains to one of the configured CA certificates (RFC 5280 path validation by webpki). The
//! verified certificate's fingerprint and subject common name reach the service in
//! [`super::ConnCtx::client_cert`], which binds them to a peer identity.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// Most bytes of plaintext plus ciphertext one connection's TLS layer buffers for sending;
/// above it writes report `WouldBlock` and the connection's own output limit applies.
pub const TLS_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Longest subject common name carried in [`ClientCert`], in bytes (the longest peer id).
pub const MAX_CERT_NAME: usize = 64;

/// Lowest TLS version a listener accepts. Versions below 1.2 do not exist here (RFC 8996).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsMinVersion {
    /// Parses `"1.2"` or `"1.3"`; anything older is refused with the reason.
    pub fn parse(s: &str) -> Result<TlsMinVersion, String> {
        match s {
            "1.2" => Ok(TlsMinVersion::Tls12),
            "1.3" => Ok(TlsMinVersion::Tls13),
            "1.0" | "1.1" | "1" => Err(format!(
                "TLS {s} is refused: TLS below 1.2 is deprecated (RFC 8996); use \"1.2\" or \"1.3\""
            )),
            other => Err(format!(
                "unknown TLS version \"{other}\" (use \"1.2\" or \"1.3\")"
            )),
        }
    }
}

/// Client certificates a listener requires (RFC 7846 §4 TLS client authentication).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertPolicy {
    /// PEM file of CA certificates: a client certificate chaining to one is accepted.
    pub ca: Option<PathBuf>,
    /// File of `<SHA-256 fingerprint in hex> <peer id>` lines (see [`read_fingerprint_file`]):
    /// a client certificate with a listed fingerprint is accepted.
    pub fingerprints: Option<PathBuf>,
}

/// Everything a listener's TLS needs, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, end-entity first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Must not be readable by group
    /// or others.
    pub key: PathBuf,
    pub min_version: TlsMinVersion,
    /// A connection whose handshake has not completed after this long is closed and counted.
    pub handshake_timeout: Duration,
    /// `None`: no client certificate is asked for.
    pub client_certs: Option<ClientCertPolicy>,
}

/// The verified client certificate of a connection, as the service sees it. `Copy`, so it
/// travels in [`super::ConnCtx`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the end-entity certificate (DER).
    pub fingerprint: [u8; 32],
    name: [u8; MAX_CERT_NAME],
    name_len: u8,
    /// Accepted because it chains to a configured CA (not only because it is listed), so its
    /// subject name is vouched for by that CA.
    pub chain_verified: bool,
}

impl ClientCert {
    /// The subject common name (UTF-8), when present and at most [`MAX_CERT_NAME`] bytes.
    pub fn common_name(&self) -> Option<&[u8]> {
        (self.name_len > 0).then(|| &self.name[..usize::from(self.name_len)])
    }

    fn from_der(der: &[u8], chain_verified: bool) -> ClientCert {
        let mut cert = ClientCert {
            fingerprint: sha256(der),
            name: [0; MAX_CERT_NAME],
            name_len: 0,
            chain_verified,
        };
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der) {
            let cn = parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok());
            if let Some(cn) = cn.filter(|cn| !cn.is_empty() && cn.len() <= MAX_CERT_NAME) {
                cert.name[..cn.len()].copy_from_slice(cn.as_bytes());
                cert.name_len = cn.len() as u8;
            }
        }
        cert
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("fingerprint", &hex(&self.fingerprint))
            .field(
                "common_name",
                &self.common_name().map(String::from_utf8_lossy),
            )
            .field("chain_verified", &self.chain_verified)
            .finish()
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    crate::hex::string(bytes)
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally separated by `:` (as `openssl x509
/// -fingerprint -sha256` prints them).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Reads a fingerprint file: one `<fingerprint> <peer id>` per line (blank lines and `#`
/// comments ignored). The peer id is what a connection presenting that certificate may act
/// as. Errors name the file and line.
pub fn read_fingerprint_file(path: &Path) -> Result<Vec<([u8; 32], String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(fp), Some(peer), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "{}:{}: expected `<sha256 fingerprint> <peer id>`",
                path.display(),
                i + 1
            ));
        };
        let Some(fp) = parse_fingerprint(fp) else {
            return Err(format!(
                "{}:{}: the fingerprint is not 64 hex digits",
                path.display(),
                i + 1
            ));
        };
        entries.push((fp, peer.to_owned()));
    }
    Ok(entries)
}

/// Refuses a secret file that group or others may read (the private key, the Digest
/// credentials), naming the file and its mode.
pub fn check_secret_file_mode(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by group or others (mode {mode:03o}): refused; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// The rustls provider: *ring*, with the RFC 7525 cipher suites in preference order (AES-GCM
/// first, then ChaCha20-Poly1305; TLS 1.2 only with ECDHE).
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Accepts a client certificate whose fingerprint is listed, or that chains to a configured
/// CA. Handshake signatures are checked with the provider's algorithms either way.
struct ClientVerifier {
    chain: Option<Arc<dyn ClientCertVerifier>>,
    pinned: HashSet<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("ca", &self.chain.is_some())
            .field("pinned", &self.pinned.len())
            .finish()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.chain {
            Some(chain) => chain.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.pinned.contains(&sha256(end_entity)) {
            // A listed certificate is trusted by its fingerprint, within its validity period.
            let (_, parsed) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            crate::x509::Validity::of(&parsed)
                .check(now)
                .map_err(crate::x509::ValidityError::to_rustls)?;
            return Ok(ClientCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => chain.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One configuration generation: the rustls configuration and the pinned fingerprints it
/// accepts (to tell, after a handshake, whether the client was accepted by pin or by chain).
struct Generation {
    config: Arc<rustls::ServerConfig>,
    pinned: Arc<HashSet<[u8; 32]>>,
}

/// Builds the rustls configuration from the files named in `settings`. Errors name the file.
fn build(settings: &TlsSettings) -> Result<Generation, String> {
    let cert_path = &settings.cert;
    let key_path = &settings.key;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("cannot read certificate chain {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate chain {}: no PEM certificate in it",
            cert_path.display()
        ));
    }
    // Opening first gives "cannot read" with the OS reason for a missing or unreadable key.
    std::fs::File::open(key_path)
        .map_err(|e| format!("cannot read private key {}: {e}", key_path.display()))?;
    check_secret_file_mode(key_path).map_err(|e| format!("private key {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("private key {}: {e}", key_path.display()))?;

    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut pinned = HashSet::new();
    let builder = match &settings.client_certs {
        None => builder.with_no_client_auth(),
        Some(policy) => {
            let chain = match &policy.ca {
                None => None,
                Some(ca_path) => {
                    let mut roots = RootCertStore::empty();
                    for cert in CertificateDer::pem_file_iter(ca_path)
                        .map_err(|e| format!("cannot read client CA {}: {e}", ca_path.display()))?
                    {
                        let cert =
                            cert.map_err(|e| format!("client CA {}: {e}", ca_path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("client CA {}: {e}", ca_path.display()))?;
                    }
                    if roots.is_empty() {
                        return Err(format!(
                            "client CA {}: no PEM certificate in it",
                            ca_path.display()
                        ));
                    }
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| format!("client CA {}: {e}", ca_path.display()))?;
                    Some(verifier)
                }
            };
            if let Some(path) = &policy.fingerprints {
                pinned.extend(read_fingerprint_file(path)?.into_iter().map(|(fp, _)| fp));
            }
            if chain.is_none() && pinned.is_empty() {
                return Err(
                    "client certificates are required but neither a CA nor a fingerprint is configured"
                        .to_owned(),
                );
            }
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                chain,
                pinned: pinned.clone(),
                algorithms: provider.signature_verification_algorithms,
            }))
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not make a usable pair: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Generation {
        config: Arc::new(config),
        pinned: Arc::new(pinned),
    })
}

/// One listener's TLS: settings and the configuration in force. Shared by every worker.
pub struct TlsAcceptor {
    settings: TlsSettings,
    current: RwLock<Arc<Generation>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TlsAcceptor {
    /// Reads the certificate chain, key and client-certificate policy. Fails naming the file
    /// that is missing, unreadable, malformed, or (for the key) readable by group or others.
    pub fn new(settings: TlsSettings) -> Result<TlsAcceptor, String> {
        let generation = build(&settings)?;
        Ok(TlsAcceptor {
            settings,
            current: RwLock::new(Arc::new(generation)),
        })
    }

    /// Re-reads every file and puts the new configuration in force for new connections; open
    /// connections keep theirs. On error the configuration in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let generation = build(&self.settings)?;
        *self.current.write() = Arc::new(generation);
        Ok(())
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Starts the server side of a new connection.
    pub fn accept(&self, now: Instant) -> Result<TlsConn, String> {
        let generation = self.current.read().clone();
        let mut conn = rustls::ServerConnection::new(generation.config.clone())
            .map_err(|e| format!("TLS session: {e}"))?;
        conn.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
        Ok(TlsConn {
            conn,
            pinned: generation.pinned.clone(),
            opened: now,
            client_cert: None,
        })
    }
}

/// The TLS state of one connection (sans-IO: the ciphertext side is whatever `Read`/`Write`
/// the back-end passes).
pub struct TlsConn {
    conn: rustls::ServerConnection,
    pinned: Arc<HashSet<[u8; 32]>>,
    opened: Instant,
    client_cert: Option<ClientCert>,
}

impl TlsConn {
    /// The handshake has not completed yet.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// When the connection was accepted (the handshake deadline counts from here).
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// The verified client certificate, once the handshake is done (when one was required).
    pub fn client_cert(&self) -> Option<ClientCert> {
        self.client_cert
    }

    /// TLS records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Reads decrypted bytes into `buf`, taking ciphertext from `io` as needed and writing
    /// handshake records to it. `Ok(0)` is the end of the stream (close_notify or TCP FIN);
    /// `WouldBlock` means `io` has no more ciphertext; `InvalidData` is a TLS failure (an
    /// alert has been queued and, when possible, written).
    pub fn read_plain<S: Read + Write>(&mut self, io: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: the end of the stream all the same, since
                // HTTP framing tells whether a request was complete.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(io) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let processed = self.conn.process_new_packets();
            if let Err(e) = processed {
                // Send the alert rustls queued, best effort.
                let _ = self.flush(io);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.client_cert.is_none() && !self.conn.is_handshaking() {
                self.client_cert = self.conn.peer_certificates().and_then(|certs| {
                    certs.first().map(|der| {
                        let fp = sha256(der);
                        ClientCert::from_der(der, !self.pinned.contains(&fp))
                    })
                });
            }
            if self.conn.wants_write() {
                match self.flush(io) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Encrypts as much of `buf` as the send buffer takes and writes records to `io`. Returns
    /// the plaintext bytes taken; `WouldBlock` when none could be taken.
    pub fn write_plain<S: Write>(&mut self, io: &mut S, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let _ = self.flush(io);
        let taken = self.conn.writer().write(buf)?;
        match self.flush(io) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Writes pending records to `io` until none is left (`Ok(true)`) or `io` would block
    /// (`Ok(false)`).
    pub fn flush<S: Write>(&mut self, io: &mut S) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a close_notify alert and writes what it can (before the socket is shut down).
    pub fn close<S: Write>(&mut self, io: &mut S) {
        self.conn.send_close_notify();
        let _ = self.flush(io);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "00".repeat(31) + "ff";
        assert_eq!(parse_fingerprint(&plain).unwrap()[31], 0xff);
        let colons: Vec<String> = (0..32).map(|i| format!("{i:02X}")).collect();
        let fp = parse_fingerprint(&colons.join(":")).unwrap();
        assert_eq!(fp[10], 10);
        assert!(parse_fingerprint("abc").is_none());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn versions_below_1_2_are_refused_with_the_reason() {
        assert_eq!(TlsMinVersion::parse("1.2"), Ok(TlsMinVersion::Tls12));
        assert_eq!(TlsMinVersion::parse("1.3"), Ok(TlsMinVersion::Tls13));
        let e = TlsMinVersion::parse("1.1").unwrap_err();
        assert!(e.contains("RFC 8996"), "{e}");
        assert!(TlsMinVersion::parse("ssl3").is_err());
    }

    #[test]
    fn a_group_readable_secret_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = check_secret_file_mode(&path).unwrap_err();
        assert!(e.contains("key.pem") && e.contains("640"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_secret_file_mode(&path).is_ok());
        let missing = dir.path().join("missing.pem");
        let e = check_secret_file_mode(&missing).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
