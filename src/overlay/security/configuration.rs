//! The overlay Configuration Document (RFC 6940 §11.1) as far as this overlay changes it at
//! run time: the configuration `sequence`, the `configuration-signer`s, the `bad-node` list,
//! the optional `shared-secret`, and the admission list as the extension element
//! `admitted-node` in [`ADMISSION_NS`] (declared a `mandatory-extension`).
//!
//! A document is signed as §11.1 says: the bytes of the `<configuration>` element, from its
//! first `<` to the `>` of `</configuration>`, taken as a binary blob, are signed with the
//! standard SecurityBlock (§6.3.4: the signer's certificate and a signature with SignerIdentity
//! `cert_hash`), and the SecurityBlock, base64-encoded (RFC 4648), is the `<signature>` element
//! that follows. A node accepts a new document only when its signer's Node-ID is a
//! `configuration-signer` of the node's current configuration (§11.1 "signed by one of the
//! configuration-signer elements from the previous extant configuration") and its sequence is
//! newer (§6.5.4.2). It spreads with ConfigUpdate (`config` type, §6.5.4).
//!
//! Elements this implementation does not use (topology-plugin, root-cert, kind blocks...) are
//! allowed and ignored; only the first `<configuration>` element is read.

use base64::Engine as _;
use quick_xml::events::Event;

use super::{CertCache, Identity, SecurityError};
use crate::overlay::config::{admission_lists_from, parse_node_id};
use crate::overlay::security::tls::AdmissionLists;
use crate::overlay::wire::{NodeId, SecurityBlock};

/// The namespace of the admission-list extension element `admitted-node`.
pub const ADMISSION_NS: &str = "urn:ppsp-tracker:params:xml:ns:p2p:config-admission";
/// RFC 6940 §11.1 base namespace.
pub const BASE_NS: &str = "urn:ietf:params:xml:ns:p2p:config-base";
/// Largest document accepted, bytes (a ConfigUpdate's config_data may be 2^24 - 1; an
/// admission list of a few hundred nodes fits well within this).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What a configuration document says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDocument {
    /// `instance-name`: must be the overlay's.
    pub instance_name: String,
    /// `sequence` (§6.3.2.1), 0..=65534.
    pub sequence: u16,
    /// `configuration-signer`: Node-IDs allowed to sign the next document.
    pub signers: Vec<NodeId>,
    /// `admitted-node` entries: Node-IDs (32 hex digits) or `sha256:` fingerprints; empty =
    /// every node with a valid certificate.
    pub admitted: Vec<String>,
    /// `bad-node` entries: Node-IDs.
    pub bad_nodes: Vec<String>,
    /// `shared-secret` (§11.1, §13.4); `None` = no shared-secret admission.
    pub shared_secret: Option<String>,
}

/// Why a document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not well-formed, a value out of range, no signature: Error_Invalid_Message.
    #[error("configuration document: {0}")]
    Malformed(String),
    /// The signature does not verify: Error_Forbidden.
    #[error("configuration signature: {0}")]
    Signature(#[from] SecurityError),
}

/// A document whose signature verified.
#[derive(Clone, Debug)]
pub struct SignedDocument {
    pub document: ConfigDocument,
    /// The Node-ID of the signer's certificate (§11.3.1); the caller checks it is a
    /// configuration signer.
    pub signer: NodeId,
    /// The document as received, to pass on unchanged.
    pub bytes: Vec<u8>,
}

fn esc(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

impl ConfigDocument {
    /// The admission and bad-node lists it carries.
    pub fn lists(&self) -> Result<AdmissionLists, String> {
        admission_lists_from(&self.admitted, &self.bad_nodes, "admitted-node", "bad-node")
    }

    /// Range checks: sequence below 65535, Node-IDs and fingerprints well-formed.
    pub fn validate(&self) -> Result<(), String> {
        if self.sequence == u16::MAX {
            return Err("sequence 65535 is reserved (RFC 6940 §6.3.2.1)".to_owned());
        }
        if self.instance_name.is_empty() {
            return Err("instance-name is empty".to_owned());
        }
        self.lists().map(|_| ())
    }

    /// The `<configuration>` element, the bytes the signature covers.
    pub fn configuration_element(&self) -> String {
        let mut x = format!(
            "<configuration instance-name=\"{}\" sequence=\"{}\">\n",
            esc(&self.instance_name),
            self.sequence
        );
        for s in &self.signers {
            x.push_str(&format!(
                "  <configuration-signer>{s}</configuration-signer>\n"
            ));
        }
        for a in &self.admitted {
            x.push_str(&format!(
                "  <adm:admitted-node>{}</adm:admitted-node>\n",
                esc(a)
            ));
        }
        for b in &self.bad_nodes {
            x.push_str(&format!("  <bad-node>{}</bad-node>\n", esc(b)));
        }
        if let Some(secret) = &self.shared_secret {
            x.push_str(&format!(
                "  <shared-secret>{}</shared-secret>\n",
                esc(secret)
            ));
        }
        x.push_str(&format!(
            "  <mandatory-extension>{ADMISSION_NS}</mandatory-extension>\n</configuration>"
        ));
        x
    }

    /// The whole document signed by `identity` (§11.1).
    pub fn sign(&self, identity: &Identity) -> Result<Vec<u8>, String> {
        self.validate()?;
        let element = self.configuration_element();
        let block = SecurityBlock {
            certificates: vec![identity.generic_certificate()],
            signature: crate::overlay::wire::Signature {
                algorithm: super::ECDSA_SHA256,
                identity: identity.signer_identity(),
                value: identity.sign(element.as_bytes()),
            },
        };
        let block = block.to_bytes().map_err(|e| e.to_string())?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(block);
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<overlay xmlns=\"{BASE_NS}\" \
             xmlns:adm=\"{ADMISSION_NS}\">\n{element}\n<signature>{b64}</signature>\n</overlay>\n"
        )
        .into_bytes())
    }
}

/// The byte range of the first `<configuration>` element and the text of the `<signature>`
/// element after it.
fn locate(text: &str) -> Result<(std::ops::Range<usize>, &str), DocumentError> {
    let bad = |why: &str| DocumentError::Malformed(why.to_owned());
    let start = text
        .match_indices("<configuration")
        .find(|(i, _)| {
            matches!(
                text.as_bytes().get(i + "<configuration".len()),
                Some(b' ' | b'\t' | b'\r' | b'\n' | b'>')
            )
        })
        .map(|(i, _)| i)
        .ok_or_else(|| bad("no <configuration> element"))?;
    const END: &str = "</configuration>";
    let end = text[start..]
        .find(END)
        .map(|i| start + i + END.len())
        .ok_or_else(|| bad("no </configuration>"))?;
    let rest = &text[end..];
    let sig_start = rest
        .find("<signature>")
        .ok_or_else(|| bad("no <signature> after the configuration"))?
        + "<signature>".len();
    let sig_end = rest[sig_start..]
        .find("</signature>")
        .ok_or_else(|| bad("no </signature>"))?;
    Ok((start..end, &rest[sig_start..sig_start + sig_end]))
}

/// Reads the fields of a `<configuration>` element (the document is also checked to be
/// well-formed XML).
fn read_fields(whole: &str, element: &str) -> Result<ConfigDocument, DocumentError> {
    let bad = |why: String| DocumentError::Malformed(why);
    // Well-formedness of the whole document.
    let mut r = quick_xml::Reader::from_str(whole);
    r.config_mut().check_end_names = true;
    loop {
        match r.read_event() {
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(bad(format!("not well-formed XML: {e}"))),
        }
    }
    let mut doc = ConfigDocument::default();
    let mut seen_sequence = false;
    let mut r = quick_xml::Reader::from_str(element);
    r.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut text = String::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if depth == 1 {
                    for a in e.attributes() {
                        let a = a.map_err(|e| bad(format!("attribute: {e}")))?;
                        let value = a
                            .unescape_value()
                            .map_err(|e| bad(format!("attribute: {e}")))?;
                        match a.key.local_name().as_ref() {
                            b"instance-name" => doc.instance_name = value.trim().to_owned(),
                            b"sequence" => {
                                doc.sequence = value.trim().parse().map_err(|_| {
                                    bad(format!("sequence \"{value}\" is not 0..=65534"))
                                })?;
                                seen_sequence = true;
                            }
                            _ => {}
                        }
                    }
                } else if depth == 2 {
                    current = Some(name);
                    text.clear();
                }
            }
            Ok(Event::Text(t)) if depth == 2 => {
                let t = t.unescape().map_err(|e| bad(format!("text: {e}")))?;
                text.push_str(&t);
            }
            Ok(Event::End(_)) => {
                if depth == 2 {
                    let value = text.trim().to_owned();
                    match current.take().as_deref() {
                        Some("configuration-signer") => {
                            doc.signers.push(parse_node_id(&value).ok_or_else(|| {
                                bad(format!("configuration-signer \"{value}\" is not a Node-ID"))
                            })?)
                        }
                        Some("admitted-node") => doc.admitted.push(value),
                        Some("bad-node") => doc.bad_nodes.push(value),
                        Some("shared-secret") => doc.shared_secret = Some(value),
                        _ => {}
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(bad(format!("not well-formed XML: {e}"))),
        }
    }
    if !seen_sequence {
        return Err(bad("the configuration has no sequence".to_owned()));
    }
    doc.validate().map_err(bad)?;
    Ok(doc)
}

/// Parses a signed document and verifies its signature with the certificate it carries.
/// Does not check who signed it (see [`SignedDocument::signer`]) nor its sequence.
pub fn parse_signed(bytes: &[u8], certs: &mut CertCache) -> Result<SignedDocument, DocumentError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::Malformed(format!(
            "larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| DocumentError::Malformed("not UTF-8".to_owned()))?;
    let (range, signature) = locate(text)?;
    let element = &text[range];
    let document = read_fields(text, element)?;
    let compact: String = signature
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let block = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| DocumentError::Malformed("signature is not base64".to_owned()))?;
    let block = SecurityBlock::from_bytes(&block)
        .map_err(|e| DocumentError::Malformed(format!("signature block: {e}")))?;
    let sig = &block.signature;
    if sig.value.is_empty() {
        return Err(SecurityError::Unsigned.into());
    }
    let cert = certs.find(&sig.identity, &block.certificates)?;
    cert.verify(
        sig.algorithm,
        element.as_bytes(),
        &sig.value,
        super::unix_now(),
    )?;
    Ok(SignedDocument {
        document,
        signer: cert.node_id,
        bytes: bytes.to_vec(),
    })
}

/// True when configuration sequence `new` is after `current`, modulo 2^16 as TCP compares
/// sequence numbers (§6.3.2.1).
pub fn is_newer(new: u16, current: u16) -> bool {
    new != current && new.wrapping_sub(current) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::security::NodeIdDigest;

    fn doc(signer: &Identity) -> ConfigDocument {
        ConfigDocument {
            instance_name: "overlay.test & co".to_owned(),
            sequence: 7,
            signers: vec![signer.node_id()],
            admitted: vec!["01".repeat(16), format!("sha256:{}", "ab".repeat(32))],
            bad_nodes: vec!["02".repeat(16)],
            shared_secret: Some("s<e>cret".to_owned()),
        }
    }

    #[test]
    fn a_signed_document_round_trips_and_names_its_signer() {
        let id = Identity::generate(NodeIdDigest::Sha256, "t").unwrap();
        let d = doc(&id);
        let bytes = d.sign(&id).unwrap();
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 8);
        let back = parse_signed(&bytes, &mut certs).unwrap();
        assert_eq!(back.document, d);
        assert_eq!(back.signer, id.node_id());
        let lists = back.document.lists().unwrap();
        assert_eq!(lists.node_ids.len(), 1);
        assert_eq!(lists.fingerprints.len(), 1);
        assert_eq!(lists.bad_nodes.len(), 1);
    }

    #[test]
    fn a_changed_byte_in_the_configuration_breaks_the_signature() {
        let id = Identity::generate(NodeIdDigest::Sha256, "t").unwrap();
        let bytes = doc(&id).sign(&id).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 8);
        // A bad-node removed, the sequence raised, a space added: all refused.
        for tampered in [
            text.replace(&format!("  <bad-node>{}</bad-node>\n", "02".repeat(16)), ""),
            text.replace("sequence=\"7\"", "sequence=\"8\""),
            text.replace("<configuration ", "<configuration  "),
        ] {
            assert_ne!(tampered, text);
            assert!(matches!(
                parse_signed(tampered.as_bytes(), &mut certs),
                Err(DocumentError::Signature(_))
            ));
        }
    }

    #[test]
    fn malformed_documents_are_refused_without_panicking() {
        let id = Identity::generate(NodeIdDigest::Sha256, "t").unwrap();
        let good = String::from_utf8(doc(&id).sign(&id).unwrap()).unwrap();
        let mut certs = CertCache::new(NodeIdDigest::Sha256, 8);
        for bad in [
            String::new(),
            "<overlay/>".to_owned(),
            good.replace("<signature>", "<sig>"),
            good.replace("</configuration>", "</configuratio>"),
            good.replace("sequence=\"7\"", "sequence=\"65535\""),
            good.replace("sequence=\"7\"", "sequence=\"x\""),
            good[..good.len() / 2].to_owned(),
            good.replace("<signature>", "<signature>!!"),
        ] {
            assert!(matches!(
                parse_signed(bad.as_bytes(), &mut certs),
                Err(DocumentError::Malformed(_))
            ));
        }
        assert!(parse_signed(&vec![b' '; MAX_DOCUMENT_BYTES + 1], &mut certs).is_err());
    }

    #[test]
    fn sequences_compare_modulo_2_16() {
        assert!(is_newer(8, 7));
        assert!(!is_newer(7, 7));
        assert!(!is_newer(6, 7));
        assert!(is_newer(0, 65534));
        assert!(!is_newer(65534, 0));
    }
}
