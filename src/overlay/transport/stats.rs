//! The overlay thread's counters, written by that thread and read by `/metrics` without
//! waiting for it. Per-code counters are indexed by RELOAD message code or error code, so
//! memory is fixed whatever arrives.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::overlay::wire::{ErrorCode, MessageCode};

/// Slots per code table: every message code of RFC 6940 §14.8 that [`MessageCode`] knows, by
/// its index in [`MessageCode::ALL`].
const CODE_SLOTS: usize = 64;
/// Error codes are `uint16`; RFC 6940 §14.9 assigns small values, larger ones share the last
/// slot.
const ERROR_SLOTS: usize = 32;

/// Counters of one overlay node.
pub struct TransportStats {
    sent: [AtomicU64; CODE_SLOTS],
    received: [AtomicU64; CODE_SLOTS],
    errors: [AtomicU64; ERROR_SLOTS],
    /// Retransmissions the Chord node made (RFC 6940 §6.2.1 end-to-end).
    pub retransmissions: AtomicU64,
    /// Links that failed (closed by the peer, ack timeout, backpressure, bad framing, refused).
    pub link_failures: AtomicU64,
    /// Links opened, either way.
    pub links_opened: AtomicU64,
    /// Attach requests this node forwarded for others.
    pub attach_forwarded: AtomicU64,
    /// Messages that could not be decoded or delivered and were dropped.
    pub dropped: AtomicU64,
    /// Sum and count of the hops of responses delivered here (via list length + 1).
    pub response_hops_sum: AtomicU64,
    pub response_hops_count: AtomicU64,
    /// Links refused for their peer: a certificate that is invalid, not admitted or on the
    /// bad-node list (at the TLS handshake), or a hello naming another Node-ID than the
    /// link's certificate. Shared with the TLS verifiers.
    pub links_refused: std::sync::Arc<AtomicU64>,
    /// Messages and stored values whose signature did not verify (RFC 6940 §6.3.4, §7.1).
    pub bad_signatures: AtomicU64,
    /// Store requests refused Error_Forbidden (bad value signature, key not the signer's
    /// Node-ID, signer not admitted).
    pub forbidden_stores: AtomicU64,
    /// Commands refused because the overlay thread's bounded command queue was full
    /// (answered 503 on the admin listener; the federation retries at its next flush).
    pub commands_refused: AtomicU64,
}

impl Default for TransportStats {
    fn default() -> Self {
        TransportStats {
            sent: std::array::from_fn(|_| AtomicU64::new(0)),
            received: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            retransmissions: AtomicU64::new(0),
            link_failures: AtomicU64::new(0),
            links_opened: AtomicU64::new(0),
            attach_forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            response_hops_sum: AtomicU64::new(0),
            response_hops_count: AtomicU64::new(0),
            links_refused: std::sync::Arc::new(AtomicU64::new(0)),
            bad_signatures: AtomicU64::new(0),
            forbidden_stores: AtomicU64::new(0),
            commands_refused: AtomicU64::new(0),
        }
    }
}

fn slot(code: MessageCode) -> usize {
    MessageCode::ALL
        .iter()
        .position(|c| *c == code)
        .unwrap_or(0)
        .min(CODE_SLOTS - 1)
}

impl TransportStats {
    pub fn sent(&self, code: MessageCode) {
        if let Some(c) = self.sent.get(slot(code)) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn received(&self, code: MessageCode) {
        if let Some(c) = self.received.get(slot(code)) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn error(&self, code: ErrorCode) {
        let i = usize::from(code.to_u16()).min(ERROR_SLOTS - 1);
        if let Some(c) = self.errors.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn sent_count(&self, code: MessageCode) -> u64 {
        self.sent.get(slot(code)).map_or(0, |c| c.load(Relaxed))
    }

    pub fn received_count(&self, code: MessageCode) -> u64 {
        self.received.get(slot(code)).map_or(0, |c| c.load(Relaxed))
    }

    /// Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut w = String::new();
        for (name, table, help) in [
            (
                "ppsp_overlay_messages_sent_total",
                &self.sent,
                "RELOAD messages sent, by message code",
            ),
            (
                "ppsp_overlay_messages_received_total",
                &self.received,
                "RELOAD messages received, by message code",
            ),
        ] {
            let _ = writeln!(w, "# HELP {name} {help}.\n# TYPE {name} counter");
            for code in MessageCode::ALL.iter() {
                let v = table.get(slot(*code)).map_or(0, |c| c.load(Relaxed));
                if v > 0 {
                    let _ = writeln!(w, "{name}{{code=\"{}\"}} {v}", code.name());
                }
            }
        }
        let name = "ppsp_overlay_errors_total";
        let _ = writeln!(
            w,
            "# HELP {name} RELOAD errors answered or received, by error code.\n# TYPE {name} counter"
        );
        for (i, c) in self.errors.iter().enumerate() {
            let v = c.load(Relaxed);
            if v > 0 {
                let _ = writeln!(w, "{name}{{code=\"{i}\"}} {v}");
            }
        }
        for (name, v, help) in [
            (
                "ppsp_overlay_retransmissions_total",
                &self.retransmissions,
                "End-to-end request retransmissions (RFC 6940 6.2.1)",
            ),
            (
                "ppsp_overlay_link_failures_total",
                &self.link_failures,
                "Links failed: closed, ack timeout, backpressure, bad framing, refused",
            ),
            (
                "ppsp_overlay_links_opened_total",
                &self.links_opened,
                "Links opened, inbound and outbound",
            ),
            (
                "ppsp_overlay_attach_forwarded_total",
                &self.attach_forwarded,
                "Attach messages forwarded for other nodes",
            ),
            (
                "ppsp_overlay_dropped_total",
                &self.dropped,
                "Messages dropped as undeliverable or undecodable",
            ),
            (
                "ppsp_overlay_response_hops_sum",
                &self.response_hops_sum,
                "Sum of the hop counts of responses delivered to this node",
            ),
            (
                "ppsp_overlay_response_hops_count",
                &self.response_hops_count,
                "Responses delivered to this node",
            ),
            (
                "ppsp_overlay_links_refused_total",
                &*self.links_refused,
                "Links refused: peer certificate invalid, not admitted or bad, or not the Node-ID claimed",
            ),
            (
                "ppsp_overlay_bad_signatures_total",
                &self.bad_signatures,
                "Messages and stored values whose signature did not verify",
            ),
            (
                "ppsp_overlay_forbidden_stores_total",
                &self.forbidden_stores,
                "Store requests refused with Error_Forbidden",
            ),
            (
                "ppsp_overlay_commands_refused_total",
                &self.commands_refused,
                "Commands refused because the overlay thread's command queue was full",
            ),
        ] {
            let _ = writeln!(
                w,
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_by_code_name() {
        let s = TransportStats::default();
        s.sent(MessageCode::PingReq);
        s.sent(MessageCode::PingReq);
        s.received(MessageCode::AttachAns);
        s.error(ErrorCode::NotFound);
        let text = s.render();
        assert!(text.contains("ppsp_overlay_messages_sent_total{code=\"ping_req\"} 2"));
        assert!(text.contains("ppsp_overlay_messages_received_total{code=\"attach_ans\"} 1"));
        assert!(text.contains(&format!(
            "ppsp_overlay_errors_total{{code=\"{}\"}} 1",
            ErrorCode::NotFound.to_u16()
        )));
        assert_eq!(s.sent_count(MessageCode::PingReq), 2);
    }
}
