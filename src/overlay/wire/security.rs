//! The security block (RFC 6940 §6.3.4): certificates and the message signature, plus the
//! `Signature` structure that stored data reuses (§7.1).
//!
//! Nodes currently send the unsigned placeholder ([`SecurityBlock::placeholder`]): no
//! certificates and a signature with algorithm {0, 0}, identity type none and an empty value.
//! Everything else is decoded and re-encoded faithfully so that signed messages from other
//! implementations survive a round trip.

use super::codec::{put_opaque, put_prefixed, put_u8, Prefix, Reader};
use super::error::{EncodeError, WireError};

/// ```text
/// struct {
///   CertificateType  type;                         // uint8, RFC 6091: X.509(0), OpenPGP(1)
///   opaque           certificate<0..2^16-1>;
/// } GenericCertificate;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GenericCertificate {
    pub cert_type: u8,
    pub certificate: Vec<u8>,
}

/// TLS `SignatureAndHashAlgorithm` (RFC 5246 §7.4.1.4.1), `{ HashAlgorithm hash;
/// SignatureAlgorithm signature; }`, one byte each. {0, 0} is "none"/"anonymous".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SignatureAndHashAlgorithm {
    pub hash: u8,
    pub signature: u8,
}

/// ```text
/// enum { invalidSignerIdentityType(0), cert_hash(1), cert_hash_node_id(2), none(3), (255) }
///     SignerIdentityType;
/// struct {
///   select (identity_type) {
///     case cert_hash:         HashAlgorithm hash_alg; opaque certificate_hash<0..2^8-1>;
///     case cert_hash_node_id: HashAlgorithm hash_alg; opaque certificate_node_id_hash<0..2^8-1>;
///     case none:              /* empty */
///   };
/// } SignerIdentityValue;
/// struct {
///   SignerIdentityType   identity_type;
///   uint16               length;
///   SignerIdentityValue  identity[SignerIdentity.length];
/// } SignerIdentity;
/// ```
///
/// The structure "may be extended", and its length makes unknown types skippable, so they are
/// kept as [`SignerIdentity::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SignerIdentity {
    /// `cert_hash(1)`: hash of the signer's DER certificate.
    CertHash {
        hash_alg: u8,
        certificate_hash: Vec<u8>,
    },
    /// `cert_hash_node_id(2)`: hash of NodeId || certificate.
    CertHashNodeId {
        hash_alg: u8,
        certificate_node_id_hash: Vec<u8>,
    },
    /// `none(3)`: no identity (unsigned placeholder, synthesized storage values).
    None,
    /// Any other type above 3, with its raw value.
    Other { identity_type: u8, value: Vec<u8> },
}

/// ```text
/// struct {
///   SignatureAndHashAlgorithm  algorithm;
///   SignerIdentity             identity;
///   opaque                     signature_value<0..2^16-1>;
/// } Signature;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    pub algorithm: SignatureAndHashAlgorithm,
    pub identity: SignerIdentity,
    pub value: Vec<u8>,
}

/// ```text
/// struct {
///   GenericCertificate  certificates<0..2^16-1>;
///   Signature           signature;
/// } SecurityBlock;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecurityBlock {
    pub certificates: Vec<GenericCertificate>,
    pub signature: Signature,
}

impl Signature {
    /// Algorithm {0, 0}, identity none, empty value: the unsigned placeholder of §7.4.2.2.
    pub fn placeholder() -> Self {
        Signature {
            algorithm: SignatureAndHashAlgorithm::default(),
            identity: SignerIdentity::None,
            value: Vec::new(),
        }
    }

    /// True for the unsigned placeholder (which a Store must refuse, §7.4.1.1).
    pub fn is_placeholder(&self) -> bool {
        self.algorithm == SignatureAndHashAlgorithm::default()
            && self.identity == SignerIdentity::None
            && self.value.is_empty()
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let algorithm = SignatureAndHashAlgorithm {
            hash: r.u8("SignatureAndHashAlgorithm.hash")?,
            signature: r.u8("SignatureAndHashAlgorithm.signature")?,
        };
        let identity = SignerIdentity::decode(r)?;
        let value = r.opaque(Prefix::U16, "Signature.signature_value")?.to_vec();
        Ok(Signature {
            algorithm,
            identity,
            value,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.algorithm.hash);
        put_u8(out, self.algorithm.signature);
        self.identity.encode_into(out)?;
        put_opaque(out, Prefix::U16, "Signature.signature_value", &self.value)
    }
}

impl SignerIdentity {
    const CERT_HASH: u8 = 1;
    const CERT_HASH_NODE_ID: u8 = 2;
    const NONE: u8 = 3;

    /// The wire value of `identity_type`.
    pub fn identity_type(&self) -> u8 {
        match self {
            SignerIdentity::CertHash { .. } => Self::CERT_HASH,
            SignerIdentity::CertHashNodeId { .. } => Self::CERT_HASH_NODE_ID,
            SignerIdentity::None => Self::NONE,
            SignerIdentity::Other { identity_type, .. } => *identity_type,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let identity_type = r.u8("SignerIdentity.identity_type")?;
        let mut v = r.sub_prefixed(Prefix::U16, "SignerIdentity.length")?;
        let id = match identity_type {
            0 => {
                return Err(WireError::InvalidValue {
                    field: "SignerIdentityType",
                })
            }
            Self::CERT_HASH => SignerIdentity::CertHash {
                hash_alg: v.u8("SignerIdentity.hash_alg")?,
                certificate_hash: v
                    .opaque(Prefix::U8, "SignerIdentity.certificate_hash")?
                    .to_vec(),
            },
            Self::CERT_HASH_NODE_ID => SignerIdentity::CertHashNodeId {
                hash_alg: v.u8("SignerIdentity.hash_alg")?,
                certificate_node_id_hash: v
                    .opaque(Prefix::U8, "SignerIdentity.certificate_node_id_hash")?
                    .to_vec(),
            },
            Self::NONE => SignerIdentity::None,
            other => SignerIdentity::Other {
                identity_type: other,
                value: v.bytes(v.remaining(), "SignerIdentity.identity")?.to_vec(),
            },
        };
        v.finish("SignerIdentity.length")?;
        Ok(id)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.identity_type());
        put_prefixed(
            out,
            Prefix::U16,
            "SignerIdentity.identity",
            |out| match self {
                SignerIdentity::CertHash {
                    hash_alg,
                    certificate_hash: h,
                }
                | SignerIdentity::CertHashNodeId {
                    hash_alg,
                    certificate_node_id_hash: h,
                } => {
                    put_u8(out, *hash_alg);
                    put_opaque(out, Prefix::U8, "SignerIdentity.certificate_hash", h)
                }
                SignerIdentity::None => Ok(()),
                SignerIdentity::Other { value, .. } => {
                    out.extend_from_slice(value);
                    Ok(())
                }
            },
        )
    }
}

impl GenericCertificate {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(GenericCertificate {
            cert_type: r.u8("GenericCertificate.type")?,
            certificate: r
                .opaque(Prefix::U16, "GenericCertificate.certificate")?
                .to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.cert_type);
        put_opaque(
            out,
            Prefix::U16,
            "GenericCertificate.certificate",
            &self.certificate,
        )
    }
}

impl SecurityBlock {
    /// No certificates and the placeholder signature: what nodes send until signing exists.
    pub fn placeholder() -> Self {
        SecurityBlock {
            certificates: Vec::new(),
            signature: Signature::placeholder(),
        }
    }

    /// The block alone in its wire encoding (as RFC 6940 §11.1 signs a configuration).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// A block from exactly `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let b = Self::decode(&mut r)?;
        r.finish("SecurityBlock")?;
        Ok(b)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let certificates = r
            .sub_prefixed(Prefix::U16, "SecurityBlock.certificates")?
            .list("SecurityBlock.certificates", GenericCertificate::decode)?;
        let signature = Signature::decode(r)?;
        Ok(SecurityBlock {
            certificates,
            signature,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_prefixed(out, Prefix::U16, "SecurityBlock.certificates", |out| {
            self.certificates
                .iter()
                .try_for_each(|c| c.encode_into(out))
        })?;
        self.signature.encode_into(out)
    }
}
