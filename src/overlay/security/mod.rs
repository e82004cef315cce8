//! Overlay security in RFC 6940's self-signed mode (§11.3.1, §13.3): node identities, message
//! signatures (§6.3.4) and stored-data signatures (§7.1).
//!
//! - [`Identity`]: this node's ECDSA P-256 key pair and self-signed X.509 certificate. The
//!   Node-ID is the high-order 16 bytes of a digest (SHA-256 by default, SHA-1 allowed, the
//!   `digest` of `self-signed-permitted`) of the certificate's DER `subjectPublicKeyInfo`
//!   (§11.3.1), so no node can claim a Node-ID without the matching private key. The
//!   certificate also names the Node-ID in a `reload://` URI subjectAltName (§11.3).
//! - [`PeerCert`]: a certificate received from another node, parsed once: its Node-ID (derived
//!   the same way, never read from a field the sender chose), its public key and validity.
//!   Signatures verify with ECDSA P-256/SHA-256 (TLS SignatureAndHashAlgorithm {4, 3}) and, as
//!   §6.3.4 makes mandatory to implement, RSASSA-PKCS1-v1_5 with SHA-256 ({4, 1}, 2048-8192 bit
//!   keys).
//! - Message signatures: `overlay || transaction_id || MessageContents || SignerIdentity`
//!   ([`wire::Message::signature_input`]), with SignerIdentity `cert_hash` (SHA-256 of the
//!   DER certificate) and the certificate in the security block.
//! - Stored-data signatures: `resource_id || kind || storage_time || StoredDataValue ||
//!   SignerIdentity` ([`stored_data_input`]), each value carrying its own Signature.
//!
//! Private keys are written with mode 0600 and never formatted: [`Identity`]'s `Debug` shows
//! the Node-ID only.

pub mod configuration;
pub mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, EcdsaKeyPair, KeyPair as _};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::overlay::wire::{
    self, EncodeError, GenericCertificate, KindId, NodeId, ResourceId, Signature,
    SignatureAndHashAlgorithm, SignerIdentity, StoredData, NODE_ID_LEN,
};

/// TLS HashAlgorithm sha256 (RFC 5246 §7.4.1.4.1).
pub const HASH_SHA256: u8 = 4;
/// TLS HashAlgorithm sha1.
pub const HASH_SHA1: u8 = 2;
/// TLS SignatureAlgorithm rsa.
pub const SIG_RSA: u8 = 1;
/// TLS SignatureAlgorithm ecdsa.
pub const SIG_ECDSA: u8 = 3;
/// RFC 6091 CertificateType X.509.
pub const CERT_X509: u8 = 0;

/// ECDSA with SHA-256, the algorithm this node signs with.
pub const ECDSA_SHA256: SignatureAndHashAlgorithm = SignatureAndHashAlgorithm {
    hash: HASH_SHA256,
    signature: SIG_ECDSA,
};
/// RSASSA-PKCS1-v1_5 with SHA-256, accepted for verification (§6.3.4).
pub const RSA_PKCS1_SHA256: SignatureAndHashAlgorithm = SignatureAndHashAlgorithm {
    hash: HASH_SHA256,
    signature: SIG_RSA,
};

/// File names inside a key directory.
pub const KEY_FILE: &str = "node.key";
pub const CERT_FILE: &str = "node.crt";

/// Why something failed a security check. Every case is answered Error_Forbidden on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("certificate key type not supported")]
    UnsupportedKey,
    #[error("{0}")]
    Expired(#[from] crate::x509::ValidityError),
    #[error("unsigned (no signer identity)")]
    Unsigned,
    #[error("signer identity names no certificate carried or known")]
    UnknownSigner,
    #[error("signature algorithm {0}/{1} not supported")]
    UnsupportedAlgorithm(u8, u8),
    #[error("signature does not verify")]
    BadSignature,
    #[error("message cannot be encoded")]
    Encode,
    #[error("{0}")]
    Key(String),
}

impl From<EncodeError> for SecurityError {
    fn from(_: EncodeError) -> Self {
        SecurityError::Encode
    }
}

/// The digest turning a public key into a Node-ID (`self-signed-permitted digest`, §11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NodeIdDigest {
    Sha1,
    #[default]
    Sha256,
}

impl NodeIdDigest {
    /// "sha1" or "sha256".
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sha1" => Some(NodeIdDigest::Sha1),
            "sha256" => Some(NodeIdDigest::Sha256),
            _ => None,
        }
    }
}

/// RFC 6940 §11.3.1: the high-order 16 bytes of `digest(subjectPublicKeyInfo DER)`.
pub fn node_id_of_spki(spki_der: &[u8], digest: NodeIdDigest) -> NodeId {
    let mut id = [0u8; NODE_ID_LEN];
    match digest {
        NodeIdDigest::Sha1 => id.copy_from_slice(&Sha1::digest(spki_der)[..NODE_ID_LEN]),
        NodeIdDigest::Sha256 => id.copy_from_slice(&Sha256::digest(spki_der)[..NODE_ID_LEN]),
    }
    NodeId(id)
}

/// SHA-256 of a DER certificate: its `cert_hash` (§6.3.4) and its fingerprint.
pub fn cert_hash(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// This node's key pair and self-signed certificate.
pub struct Identity {
    key: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    cert_hash: [u8; 32],
    node_id: NodeId,
    rng: SystemRandom,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("cert_sha256", &hex(&self.cert_hash))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh ECDSA P-256 key pair and a self-signed certificate naming the Node-ID derived
    /// from it (`reload://<node-id>@<overlay>/` subjectAltName, §11.3).
    pub fn generate(digest: NodeIdDigest, instance_name: &str) -> Result<Identity, SecurityError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SecurityError::Key(e.to_string()))?;
        let node_id = node_id_of_spki(&kp.public_key_der(), digest);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| SecurityError::Key(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("reload node {node_id}"));
        let uri = format!("reload://{node_id}@{instance_name}/");
        if let Ok(uri) = rcgen::Ia5String::try_from(uri) {
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        let cert = params
            .self_signed(&kp)
            .map_err(|e| SecurityError::Key(e.to_string()))?;
        Identity::from_der(kp.serialize_der(), cert.der().to_vec(), digest)
    }

    /// An identity from a PKCS#8 ECDSA P-256 private key and its DER certificate; the
    /// certificate's public key must be the key's.
    pub fn from_der(
        pkcs8: Vec<u8>,
        cert_der: Vec<u8>,
        digest: NodeIdDigest,
    ) -> Result<Identity, SecurityError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
            .map_err(|e| SecurityError::Key(format!("private key: {e}")))?;
        let cert = PeerCert::parse(&cert_der, digest)?;
        if cert.public_key != key.public_key().as_ref() {
            return Err(SecurityError::Key(
                "the certificate is not for this private key".to_owned(),
            ));
        }
        Ok(Identity {
            key,
            pkcs8,
            cert_hash: cert.hash,
            node_id: cert.node_id,
            cert_der,
            rng,
        })
    }

    /// Reads `DIR/node.key` (PKCS#8 PEM) and `DIR/node.crt` (PEM).
    pub fn load(dir: &Path, digest: NodeIdDigest) -> Result<Identity, SecurityError> {
        let read = |name: &str| -> Result<Vec<u8>, SecurityError> {
            std::fs::read(dir.join(name))
                .map_err(|e| SecurityError::Key(format!("{}: {e}", dir.join(name).display())))
        };
        let key_pem = read(KEY_FILE)?;
        let cert_pem = read(CERT_FILE)?;
        let pkcs8 = pem_body(&key_pem, "PRIVATE KEY")
            .ok_or_else(|| SecurityError::Key(format!("{KEY_FILE}: no PRIVATE KEY block")))?;
        let cert = pem_body(&cert_pem, "CERTIFICATE")
            .ok_or_else(|| SecurityError::Key(format!("{CERT_FILE}: no CERTIFICATE block")))?;
        Identity::from_der(pkcs8, cert, digest)
    }

    /// Writes `DIR/node.key` (mode 0600, created new or truncated) and `DIR/node.crt`
    /// (0644), creating `DIR` (0700) when missing. Returns the two paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let key_path = dir.join(KEY_FILE);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)?;
        // An existing file keeps its mode on open: set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(pem_encode("PRIVATE KEY", &self.pkcs8).as_bytes())?;
        f.sync_all()?;
        let cert_path = dir.join(CERT_FILE);
        std::fs::write(&cert_path, pem_encode("CERTIFICATE", &self.cert_der))?;
        Ok((key_path, cert_path))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The DER certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the certificate (its fingerprint and `cert_hash`).
    pub fn cert_hash(&self) -> [u8; 32] {
        self.cert_hash
    }

    /// The PKCS#8 private key, for the TLS configuration only.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The SecurityBlock entry for the certificate.
    pub fn generic_certificate(&self) -> GenericCertificate {
        GenericCertificate {
            cert_type: CERT_X509,
            certificate: self.cert_der.clone(),
        }
    }

    /// SignerIdentity `cert_hash` with SHA-256 (§6.3.4: one Node-ID per certificate).
    pub fn signer_identity(&self) -> SignerIdentity {
        SignerIdentity::CertHash {
            hash_alg: HASH_SHA256,
            certificate_hash: self.cert_hash.to_vec(),
        }
    }

    /// An ECDSA P-256 / SHA-256 signature (DER-encoded, as TLS carries it) of `input`.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        // Signing fails only when the system RNG does; an empty value then fails verification
        // at the receiver rather than panicking here.
        self.key
            .sign(&self.rng, input)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// Signs a message (§6.3.4): puts the certificate in the security block, sets the signer
    /// identity and computes the signature over overlay, transaction id, contents and
    /// identity. Header fields that relays change (TTL, via and destination lists) are not
    /// covered, so a relayed message keeps its signature.
    pub fn sign_message(&self, m: &mut wire::Message) -> Result<(), SecurityError> {
        // Our certificate first; certificates already added (of stored values' signers) stay.
        let own = self.generic_certificate();
        m.security.certificates.retain(|c| *c != own);
        m.security.certificates.insert(0, own);
        m.security.signature.algorithm = ECDSA_SHA256;
        m.security.signature.identity = self.signer_identity();
        let input = m.signature_input()?;
        m.security.signature.value = self.sign(&input);
        Ok(())
    }

    /// Signs one value to be stored at `resource` under `kind` (§7.1).
    pub fn sign_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        value: &mut StoredData,
    ) -> Result<(), SecurityError> {
        value.signature = Signature {
            algorithm: ECDSA_SHA256,
            identity: self.signer_identity(),
            value: Vec::new(),
        };
        let input = stored_data_input(resource, kind, value)?;
        value.signature.value = self.sign(&input);
        Ok(())
    }
}

/// The bytes a StoredData signature covers (§7.1): `resource_id || kind || storage_time ||
/// StoredDataValue || SignerIdentity`, each in its wire encoding (the Resource-ID as the
/// `opaque resource_id<0..2^8-1>` it is in a StoreReq, kind uint32, storage_time uint64).
pub fn stored_data_input(
    resource: &ResourceId,
    kind: KindId,
    value: &StoredData,
) -> Result<Vec<u8>, SecurityError> {
    let mut out = Vec::with_capacity(128);
    wire::body::storage::encode_resource(&mut out, "resource_id", resource)?;
    out.extend_from_slice(&kind.0.to_be_bytes());
    out.extend_from_slice(&value.storage_time.to_be_bytes());
    value.value.encode_into(&mut out)?;
    value.signature.identity.encode_into(&mut out)?;
    Ok(out)
}

/// The key of a certificate, for verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAlg {
    EcdsaP256,
    Rsa,
}

/// A certificate received from another node, parsed.
#[derive(Clone, Debug)]
pub struct PeerCert {
    /// The Node-ID its public key yields (§11.3.1).
    pub node_id: NodeId,
    /// SHA-256 of the DER certificate.
    pub hash: [u8; 32],
    pub der: Vec<u8>,
    alg: KeyAlg,
    /// The subjectPublicKey bits: an uncompressed P-256 point or a PKCS#1 RSAPublicKey.
    public_key: Vec<u8>,
    /// Its validity period, checked at every use (§7.1).
    pub validity: crate::x509::Validity,
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

impl PeerCert {
    /// Parses a DER X.509 certificate and derives its Node-ID with `digest`.
    pub fn parse(der: &[u8], digest: NodeIdDigest) -> Result<PeerCert, SecurityError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SecurityError::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SecurityError::BadCertificate("trailing bytes".to_owned()));
        }
        let spki = cert.public_key();
        let alg_oid = spki.algorithm.algorithm.to_id_string();
        let alg = if alg_oid == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if curve.as_deref() != Some(OID_P256) {
                return Err(SecurityError::UnsupportedKey);
            }
            KeyAlg::EcdsaP256
        } else if alg_oid == OID_RSA {
            KeyAlg::Rsa
        } else {
            return Err(SecurityError::UnsupportedKey);
        };
        let validity = crate::x509::Validity::of(&cert);
        Ok(PeerCert {
            node_id: node_id_of_spki(spki.raw, digest),
            hash: cert_hash(der),
            der: der.to_vec(),
            alg,
            public_key: spki.subject_public_key.data.to_vec(),
            validity,
        })
    }

    /// Verifies `signature` over `input` made with `algorithm` by this certificate's key, and
    /// that `now` (Unix seconds) lies within the certificate's validity (§7.1).
    pub fn verify(
        &self,
        algorithm: SignatureAndHashAlgorithm,
        input: &[u8],
        signature: &[u8],
        now: i64,
    ) -> Result<(), SecurityError> {
        self.validity.check(now)?;
        let params: &dyn ring_sig::VerificationAlgorithm = match (algorithm, self.alg) {
            (ECDSA_SHA256, KeyAlg::EcdsaP256) => &ring_sig::ECDSA_P256_SHA256_ASN1,
            (RSA_PKCS1_SHA256, KeyAlg::Rsa) => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
            (a, _) => return Err(SecurityError::UnsupportedAlgorithm(a.hash, a.signature)),
        };
        ring_sig::UnparsedPublicKey::new(params, &self.public_key)
            .verify(input, signature)
            .map_err(|_| SecurityError::BadSignature)
    }

    /// True when `identity` names this certificate: `cert_hash` = H(certificate), or
    /// `cert_hash_node_id` = H(Node-ID || certificate) (§6.3.4), with SHA-256 or SHA-1.
    pub fn matches(&self, identity: &SignerIdentity) -> bool {
        match identity {
            SignerIdentity::CertHash {
                hash_alg,
                certificate_hash,
            } => match *hash_alg {
                HASH_SHA256 => certificate_hash.as_slice() == self.hash,
                HASH_SHA1 => certificate_hash.as_slice() == Sha1::digest(&self.der).as_slice(),
                _ => false,
            },
            SignerIdentity::CertHashNodeId {
                hash_alg,
                certificate_node_id_hash,
            } => {
                let mut input = self.node_id.0.to_vec();
                input.extend_from_slice(&self.der);
                match *hash_alg {
                    HASH_SHA256 => {
                        certificate_node_id_hash.as_slice() == Sha256::digest(&input).as_slice()
                    }
                    HASH_SHA1 => {
                        certificate_node_id_hash.as_slice() == Sha1::digest(&input).as_slice()
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Certificates seen, parsed once, by SHA-256; bounded (cleared when full) so a stream of
/// certificates cannot grow memory. Also the store of the certificates of data this node
/// holds, so replicas and Fetch answers can carry them (§6.3.4 note to implementers).
pub struct CertCache {
    digest: NodeIdDigest,
    max: usize,
    by_hash: HashMap<[u8; 32], Arc<PeerCert>>,
}

impl CertCache {
    pub fn new(digest: NodeIdDigest, max: usize) -> Self {
        CertCache {
            digest,
            max: max.max(1),
            by_hash: HashMap::new(),
        }
    }

    pub fn digest(&self) -> NodeIdDigest {
        self.digest
    }

    /// The parsed certificate for `der`, from the cache or parsed now.
    pub fn get_or_parse(&mut self, der: &[u8]) -> Result<Arc<PeerCert>, SecurityError> {
        let hash = cert_hash(der);
        if let Some(c) = self.by_hash.get(&hash) {
            return Ok(c.clone());
        }
        let parsed = Arc::new(PeerCert::parse(der, self.digest)?);
        if self.by_hash.len() >= self.max {
            self.by_hash.clear();
        }
        self.by_hash.insert(hash, parsed.clone());
        Ok(parsed)
    }

    /// The certificate `identity` names, among `carried` (parsed and cached) or already
    /// cached.
    pub fn find(
        &mut self,
        identity: &SignerIdentity,
        carried: &[GenericCertificate],
    ) -> Result<Arc<PeerCert>, SecurityError> {
        if let SignerIdentity::CertHash {
            hash_alg: HASH_SHA256,
            certificate_hash,
        } = identity
        {
            if let Some(c) = <[u8; 32]>::try_from(certificate_hash.as_slice())
                .ok()
                .and_then(|h| self.by_hash.get(&h))
            {
                return Ok(c.clone());
            }
        }
        for g in carried.iter().filter(|g| g.cert_type == CERT_X509) {
            let Ok(c) = self.get_or_parse(&g.certificate) else {
                continue;
            };
            if c.matches(identity) {
                return Ok(c);
            }
        }
        Err(SecurityError::UnknownSigner)
    }

    /// The cached certificate with SHA-256 `hash`.
    pub fn by_hash(&self, hash: &[u8]) -> Option<Arc<PeerCert>> {
        <[u8; 32]>::try_from(hash)
            .ok()
            .and_then(|h| self.by_hash.get(&h).cloned())
    }

    /// Verifies a message's signature (§6.3.4) and returns the signer's certificate.
    pub fn verify_message(&mut self, m: &wire::Message) -> Result<Arc<PeerCert>, SecurityError> {
        let sig = &m.security.signature;
        if matches!(sig.identity, SignerIdentity::None) || sig.value.is_empty() {
            return Err(SecurityError::Unsigned);
        }
        let cert = self.find(&sig.identity, &m.security.certificates)?;
        let input = m.signature_input()?;
        cert.verify(sig.algorithm, &input, &sig.value, unix_now())?;
        Ok(cert)
    }

    /// Verifies one stored value's signature (§7.1) and returns the signer's certificate.
    /// `carried` are the certificates of the message that brought it.
    pub fn verify_stored(
        &mut self,
        resource: &ResourceId,
        kind: KindId,
        value: &StoredData,
        carried: &[GenericCertificate],
    ) -> Result<Arc<PeerCert>, SecurityError> {
        let sig = &value.signature;
        if matches!(sig.identity, SignerIdentity::None) || sig.value.is_empty() {
            return Err(SecurityError::Unsigned);
        }
        let cert = self.find(&sig.identity, carried)?;
        let input = stored_data_input(resource, kind, value)?;
        cert.verify(sig.algorithm, &input, &sig.value, unix_now())?;
        Ok(cert)
    }
}

/// The body of the first PEM block labelled `label`.
pub fn pem_body(pem_text: &[u8], label: &str) -> Option<Vec<u8>> {
    pem::parse_many(pem_text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == label)
        .map(|p| p.into_contents())
}

/// PEM text of `der` under `label`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[cfg(test)]
mod tests;
