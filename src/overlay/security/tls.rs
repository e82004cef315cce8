//! TLS 1.3 for overlay links (RFC 6940 §6.6.5, link type TLS-TCP-FH-NO-ICE) with rustls, in
//! the self-signed mode: mutual authentication with certificates no authority signed.
//!
//! Both sides present their [`Identity`] certificate. The verifiers here accept a peer
//! certificate when it parses as a P-256 or RSA certificate within its validity period and
//! the Node-ID it yields (§11.3.1) passes the [`Admission`] policy; the handshake signature
//! proves possession of its key (rustls checks it with the provider's algorithms). The link
//! then checks that the Node-ID named in the link hello and in Attach is that certificate's
//! (see the transport). Refusals are counted in `refused`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{unix_now, Identity, NodeIdDigest, PeerCert, SecurityError};
use crate::overlay::wire::NodeId;

/// Who may hold a link and store (the overlay's admission list, §13.6.2, and its bad-node
/// list). Shared by the TLS verifiers and the transport; replaced as a whole when a newer
/// configuration arrives.
#[derive(Debug, Default)]
pub struct Admission {
    inner: RwLock<AdmissionLists>,
    /// Peer certificates refused at the TLS handshake (shared with the transport's counters).
    pub refused: Arc<AtomicU64>,
}

/// The lists themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionLists {
    /// Node-IDs allowed; with `fingerprints`, empty both = every valid certificate.
    pub node_ids: HashSet<NodeId>,
    /// SHA-256 fingerprints of allowed certificates.
    pub fingerprints: HashSet<[u8; 32]>,
    /// Node-IDs refused whatever the other lists say.
    pub bad_nodes: HashSet<NodeId>,
}

impl AdmissionLists {
    /// True when a node with this certificate may link and store.
    pub fn admits(&self, node_id: NodeId, fingerprint: &[u8; 32]) -> bool {
        if self.bad_nodes.contains(&node_id) {
            return false;
        }
        if self.node_ids.is_empty() && self.fingerprints.is_empty() {
            return true;
        }
        self.node_ids.contains(&node_id) || self.fingerprints.contains(fingerprint)
    }
}

impl Admission {
    /// The policy `lists`, counting refusals in `refused`.
    pub fn new(lists: AdmissionLists, refused: Arc<AtomicU64>) -> Self {
        Admission {
            inner: RwLock::new(lists),
            refused,
        }
    }

    pub fn admits(&self, cert: &PeerCert) -> bool {
        self.inner.read().admits(cert.node_id, &cert.hash)
    }

    pub fn admits_node(&self, node_id: NodeId) -> bool {
        let l = self.inner.read();
        !l.bad_nodes.contains(&node_id)
            && (l.node_ids.is_empty() && l.fingerprints.is_empty() || l.node_ids.contains(&node_id))
    }

    pub fn lists(&self) -> AdmissionLists {
        self.inner.read().clone()
    }

    pub fn replace(&self, lists: AdmissionLists) {
        *self.inner.write() = lists;
    }
}

/// Checks a peer's end-entity certificate against the policy.
#[derive(Debug)]
struct PeerPolicy {
    digest: NodeIdDigest,
    admission: Arc<Admission>,
    provider: Arc<CryptoProvider>,
}

impl PeerPolicy {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refuse = |why: String| {
            self.admission.refused.fetch_add(1, Ordering::Relaxed);
            Err(rustls::Error::General(why))
        };
        let cert = match PeerCert::parse(end_entity.as_ref(), self.digest) {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };
        if let Err(e) = cert.validity.check(unix_now()) {
            return refuse(e.to_string());
        }
        if !self.admission.admits(&cert) {
            return refuse(format!("node {} is not admitted", cert.node_id));
        }
        Ok(())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct SelfSignedServerVerifier(PeerPolicy);

impl ServerCertVerifier for SelfSignedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

#[derive(Debug)]
struct SelfSignedClientVerifier(PeerPolicy);

impl ClientCertVerifier for SelfSignedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// The client and server configurations of one node's links.
#[derive(Clone)]
pub struct TlsConfigs {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

/// The server name a dialling node sends; certificates carry no DNS name in the self-signed
/// mode and the verifier does not read it.
pub const SERVER_NAME: &str = "reload-node.invalid";

impl TlsConfigs {
    /// TLS 1.3 only, mutual authentication with `identity`'s certificate.
    pub fn new(
        identity: &Identity,
        digest: NodeIdDigest,
        admission: Arc<Admission>,
    ) -> Result<TlsConfigs, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let policy = || PeerPolicy {
            digest,
            admission: admission.clone(),
            provider: provider.clone(),
        };
        let chain = vec![CertificateDer::from(identity.certificate_der().to_vec())];
        let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.pkcs8().to_vec()));
        let tls = |e: rustls::Error| SecurityError::Key(format!("tls: {e}"));
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SelfSignedServerVerifier(policy())))
            .with_client_auth_cert(chain.clone(), key())
            .map_err(tls)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(Arc::new(SelfSignedClientVerifier(policy())))
            .with_single_cert(chain, key())
            .map_err(tls)?;
        Ok(TlsConfigs {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// A client connection for a link we dial.
    pub fn connect(&self) -> Result<rustls::Connection, SecurityError> {
        let name = ServerName::try_from(SERVER_NAME)
            .map_err(|e| SecurityError::Key(e.to_string()))?
            .to_owned();
        rustls::ClientConnection::new(self.client.clone(), name)
            .map(rustls::Connection::Client)
            .map_err(|e| SecurityError::Key(format!("tls: {e}")))
    }

    /// A server connection for a link we accepted.
    pub fn accept(&self) -> Result<rustls::Connection, SecurityError> {
        rustls::ServerConnection::new(self.server.clone())
            .map(rustls::Connection::Server)
            .map_err(|e| SecurityError::Key(format!("tls: {e}")))
    }
}

/// The Node-ID of the certificate the peer presented on a TLS connection, once the handshake
/// is done.
pub fn peer_node_id(conn: &rustls::Connection, digest: NodeIdDigest) -> Option<NodeId> {
    let cert = conn.peer_certificates()?.first()?;
    PeerCert::parse(cert.as_ref(), digest)
        .ok()
        .map(|c| c.node_id)
}
