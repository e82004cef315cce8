//! A whole RELOAD message (RFC 6940 §6.3): forwarding header, message contents (§6.3.3) and
//! security block (§6.3.4).
//!
//! The body stays as bytes in [`MessageContents`]; [`super::Body::decode`] types it once the
//! node knows it is the destination, so a forwarding peer never parses bodies.

use super::body::Body;
use super::code::MessageCode;
use super::codec::{put_opaque, put_prefixed, put_u16, put_u8, Prefix, Reader};
use super::error::{EncodeError, WireError};
use super::header::{ForwardingHeader, WireConfig, LENGTH_OFFSET};
use super::security::SecurityBlock;

/// ```text
/// enum { invalidMessageExtensionType(0), (2^16-1) } MessageExtensionType;
/// struct {
///   MessageExtensionType  type;
///   Boolean               critical;
///   opaque                extension_contents<0..2^32-1>;
/// } MessageExtension;
/// ```
/// No extension types are understood by this node; the only registered one is exp-ext (1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageExtension {
    pub extension_type: u16,
    pub critical: bool,
    pub contents: Vec<u8>,
}

/// ```text
/// struct {
///   uint16            message_code;
///   opaque            message_body<0..2^32-1>;
///   MessageExtension  extensions<0..2^32-1>;
/// } MessageContents;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageContents {
    pub code: MessageCode,
    /// The encoded body; its structure depends on `code` (see [`Body`]).
    pub body: Vec<u8>,
    pub extensions: Vec<MessageExtension>,
}

/// A RELOAD message.
///
/// ```text
/// ForwardingHeader  forwarding_header;
/// MessageContents   message_contents;
/// SecurityBlock     security_block;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: ForwardingHeader,
    pub contents: MessageContents,
    pub security: SecurityBlock,
}

impl MessageExtension {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let extension_type = r.u16("MessageExtension.type")?;
        if extension_type == 0 {
            return Err(WireError::InvalidValue {
                field: "MessageExtensionType",
            });
        }
        Ok(MessageExtension {
            extension_type,
            critical: r.boolean("MessageExtension.critical")?,
            contents: r
                .opaque(Prefix::U32, "MessageExtension.extension_contents")?
                .to_vec(),
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u16(out, self.extension_type);
        put_u8(out, u8::from(self.critical));
        put_opaque(
            out,
            Prefix::U32,
            "MessageExtension.extension_contents",
            &self.contents,
        )
    }
}

impl MessageContents {
    /// Contents carrying `body`, with no extensions.
    pub fn from_body(body: &Body) -> Result<Self, EncodeError> {
        Ok(MessageContents {
            code: body.code(),
            body: body.to_bytes()?,
            extensions: Vec::new(),
        })
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let raw = r.u16("message_code")?;
        let code = MessageCode::from_u16(raw).ok_or(WireError::UnknownMessageCode(raw))?;
        let body = r.opaque(Prefix::U32, "message_body")?.to_vec();
        let extensions = r
            .sub_prefixed(Prefix::U32, "extensions")?
            .list("extensions", MessageExtension::decode)?;
        Ok(MessageContents {
            code,
            body,
            extensions,
        })
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u16(out, self.code.to_u16());
        put_opaque(out, Prefix::U32, "message_body", &self.body)?;
        put_prefixed(out, Prefix::U32, "extensions", |out| {
            self.extensions.iter().try_for_each(|e| e.encode_into(out))
        })
    }

    /// Rejects a critical extension, since this node understands none (§6.3.3).
    pub fn check_extensions(&self) -> Result<(), WireError> {
        match self.extensions.iter().find(|e| e.critical) {
            Some(e) => Err(WireError::UnknownExtension(e.extension_type)),
            None => Ok(()),
        }
    }

    /// Types the body (see [`Body::decode`]).
    pub fn decode_body(&self, kinds: &dyn super::KindModels) -> Result<Body, WireError> {
        Body::decode(self.code, &self.body, kinds)
    }
}

impl Message {
    /// Decodes one whole message that this node is the destination of. `bytes` must hold
    /// exactly the message (as a data frame delivers it).
    ///
    /// Besides structure, it checks everything [`super::PeekedMessage::peek`] checks (token,
    /// size limit, version, overlay, TTL against initial-ttl, fragment bit, declared length)
    /// and then: the message is not a fragment, its message code is assigned, no forwarding
    /// option is DESTINATION_CRITICAL and no extension is critical (this node understands
    /// none of either).
    ///
    /// To answer a rejection with an error response, [`super::PeekedMessage::peek`] the same
    /// bytes: when the header itself is sound it yields the transaction id and via list the
    /// answer needs ([`ForwardingHeader::response_header`]).
    pub fn decode(bytes: &[u8], cfg: &WireConfig) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let header = ForwardingHeader::decode(&mut r, cfg)?;
        if !header.fragment.is_whole() {
            return Err(WireError::Fragmented {
                offset: header.fragment.offset(),
                last: header.fragment.is_last(),
            });
        }
        let contents = MessageContents::decode(&mut r)?;
        let security = SecurityBlock::decode(&mut r)?;
        r.finish("length")?;
        header.check_deliverable()?;
        contents.check_extensions()?;
        Ok(Message {
            header,
            contents,
            security,
        })
    }

    /// Appends the encoded message to `out`, computing the header's `length`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        self.header.encode_into(out, 0)?;
        self.contents.encode_into(out)?;
        self.security.encode_into(out)?;
        let total = super::codec::check_len(out.len() - start, Prefix::U32, "length")?;
        if let Some(dst) = out.get_mut(start + LENGTH_OFFSET..start + LENGTH_OFFSET + 4) {
            dst.copy_from_slice(&total.to_be_bytes());
        }
        Ok(())
    }

    /// The bytes a message signature covers (§6.3.4):
    /// `overlay || transaction_id || MessageContents || SignerIdentity`, with the overlay and
    /// transaction id as their header encodings and the signer identity of `self.security`.
    pub fn signature_input(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(12 + self.contents.body.len() + 64);
        super::codec::put_u32(&mut out, self.header.overlay.0);
        super::codec::put_u64(&mut out, self.header.transaction_id.0);
        self.contents.encode_into(&mut out)?;
        self.security.signature.identity.encode_into(&mut out)?;
        Ok(out)
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}
