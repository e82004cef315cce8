//! RELOAD message codes (RFC 6940 §6.3.3, IANA table §14.8).
//!
//! Requests are odd, and each answer is its request's code plus one; 0xFFFF is the error
//! response. Unassigned, retired (remove, attachlite, app_attachlite) and reserved codes have no
//! variant: [`MessageCode::from_u16`] returns `None` for them and decoders reject them.

/// Every message code RFC 6940 §14.8 assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageCode {
    ProbeReq = 0x01,
    ProbeAns = 0x02,
    AttachReq = 0x03,
    AttachAns = 0x04,
    StoreReq = 0x07,
    StoreAns = 0x08,
    FetchReq = 0x09,
    FetchAns = 0x0a,
    FindReq = 0x0d,
    FindAns = 0x0e,
    JoinReq = 0x0f,
    JoinAns = 0x10,
    LeaveReq = 0x11,
    LeaveAns = 0x12,
    UpdateReq = 0x13,
    UpdateAns = 0x14,
    RouteQueryReq = 0x15,
    RouteQueryAns = 0x16,
    PingReq = 0x17,
    PingAns = 0x18,
    StatReq = 0x19,
    StatAns = 0x1a,
    AppAttachReq = 0x1d,
    AppAttachAns = 0x1e,
    ConfigUpdateReq = 0x21,
    ConfigUpdateAns = 0x22,
    /// exp_a_req: experimentation only. The tracker uses it for peer-status reads
    /// (protocols.md §3).
    ExpAReq = 0x23,
    ExpAAns = 0x24,
    ExpBReq = 0x25,
    ExpBAns = 0x26,
    /// The error response; its body is an `ErrorResponse`.
    Error = 0xffff,
}

impl MessageCode {
    /// Every assigned code, in numeric order.
    pub const ALL: [MessageCode; 31] = [
        MessageCode::ProbeReq,
        MessageCode::ProbeAns,
        MessageCode::AttachReq,
        MessageCode::AttachAns,
        MessageCode::StoreReq,
        MessageCode::StoreAns,
        MessageCode::FetchReq,
        MessageCode::FetchAns,
        MessageCode::FindReq,
        MessageCode::FindAns,
        MessageCode::JoinReq,
        MessageCode::JoinAns,
        MessageCode::LeaveReq,
        MessageCode::LeaveAns,
        MessageCode::UpdateReq,
        MessageCode::UpdateAns,
        MessageCode::RouteQueryReq,
        MessageCode::RouteQueryAns,
        MessageCode::PingReq,
        MessageCode::PingAns,
        MessageCode::StatReq,
        MessageCode::StatAns,
        MessageCode::AppAttachReq,
        MessageCode::AppAttachAns,
        MessageCode::ConfigUpdateReq,
        MessageCode::ConfigUpdateAns,
        MessageCode::ExpAReq,
        MessageCode::ExpAAns,
        MessageCode::ExpBReq,
        MessageCode::ExpBAns,
        MessageCode::Error,
    ];

    /// The 16-bit wire value.
    pub const fn to_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, or `None` when §14.8 does not assign it.
    pub fn from_u16(v: u16) -> Option<MessageCode> {
        MessageCode::ALL.iter().copied().find(|c| c.to_u16() == v)
    }

    /// True for requests (odd codes below 0x8000).
    pub const fn is_request(self) -> bool {
        let v = self as u16;
        v < 0x8000 && v % 2 == 1
    }

    /// True for answers, including the error response.
    pub const fn is_response(self) -> bool {
        !self.is_request()
    }

    /// The answer that pairs with this request (request code + 1), or `None` for an answer.
    pub fn answer(self) -> Option<MessageCode> {
        if self.is_request() {
            MessageCode::from_u16(self.to_u16() + 1)
        } else {
            None
        }
    }

    /// The request this answer pairs with (answer code - 1), or `None` for a request or the
    /// error response.
    pub fn request(self) -> Option<MessageCode> {
        if self.is_request() || self == MessageCode::Error {
            None
        } else {
            MessageCode::from_u16(self.to_u16() - 1)
        }
    }

    /// The registry name, e.g. `ping_req`.
    pub const fn name(self) -> &'static str {
        match self {
            MessageCode::ProbeReq => "probe_req",
            MessageCode::ProbeAns => "probe_ans",
            MessageCode::AttachReq => "attach_req",
            MessageCode::AttachAns => "attach_ans",
            MessageCode::StoreReq => "store_req",
            MessageCode::StoreAns => "store_ans",
            MessageCode::FetchReq => "fetch_req",
            MessageCode::FetchAns => "fetch_ans",
            MessageCode::FindReq => "find_req",
            MessageCode::FindAns => "find_ans",
            MessageCode::JoinReq => "join_req",
            MessageCode::JoinAns => "join_ans",
            MessageCode::LeaveReq => "leave_req",
            MessageCode::LeaveAns => "leave_ans",
            MessageCode::UpdateReq => "update_req",
            MessageCode::UpdateAns => "update_ans",
            MessageCode::RouteQueryReq => "route_query_req",
            MessageCode::RouteQueryAns => "route_query_ans",
            MessageCode::PingReq => "ping_req",
            MessageCode::PingAns => "ping_ans",
            MessageCode::StatReq => "stat_req",
            MessageCode::StatAns => "stat_ans",
            MessageCode::AppAttachReq => "app_attach_req",
            MessageCode::AppAttachAns => "app_attach_ans",
            MessageCode::ConfigUpdateReq => "config_update_req",
            MessageCode::ConfigUpdateAns => "config_update_ans",
            MessageCode::ExpAReq => "exp_a_req",
            MessageCode::ExpAAns => "exp_a_ans",
            MessageCode::ExpBReq => "exp_b_req",
            MessageCode::ExpBAns => "exp_b_ans",
            MessageCode::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_pairs_with_the_next_code() {
        let mut requests = 0;
        for c in MessageCode::ALL {
            if c.is_request() {
                requests += 1;
                let a = c.answer().expect("every assigned request has an answer");
                assert_eq!(a.to_u16(), c.to_u16() + 1);
                assert_eq!(a.request(), Some(c));
            }
        }
        assert_eq!(requests, 15);
        assert_eq!(MessageCode::Error.request(), None);
        assert!(MessageCode::Error.is_response());
    }

    #[test]
    fn unassigned_codes_have_no_variant() {
        for v in [
            0x0, 0x5, 0x6, 0xb, 0xc, 0x1b, 0x1c, 0x1f, 0x20, 0x27, 0x8000, 0xfffe,
        ] {
            assert_eq!(MessageCode::from_u16(v), None, "{v:#x}");
        }
        for c in MessageCode::ALL {
            assert_eq!(MessageCode::from_u16(c.to_u16()), Some(c));
        }
        assert_eq!(MessageCode::PingReq.to_u16(), 23);
    }
}
