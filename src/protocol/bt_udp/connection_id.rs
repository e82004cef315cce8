//! Stateless BEP 15 connection ids: a keyed hash of the client's address and a time slot.
//!
//! BEP 15 ("UDP connections / spoofing"): the connection id proves that the client receives
//! packets at its source address, like a SYN cookie; clients use an id for up to one minute and
//! trackers should accept it until two minutes after sending it. We store nothing per client:
//! the id is SipHash-2-4, keyed with a 128-bit secret drawn at start, over the canonical source
//! IP (16 bytes, IPv4 as IPv4-mapped), the source port and the time slot number
//! (`now / slot length`, 60 s by default). An id is accepted in the slot it was issued in and in
//! the next one, so it lives between one and two slot lengths. Time is passed in.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher24;

use super::tracker::canonical_ip;
use crate::engine::Time;

/// Default length of a connection-id time slot: ids live 60 to 120 seconds.
pub const DEFAULT_SLOT_MILLIS: u64 = 60_000;

/// The 128-bit secret of connection ids. Draw it at start from a cryptographic source; a
/// restart with a new secret only makes clients reconnect.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConnectionIdSecret([u8; 16]);

impl ConnectionIdSecret {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        ConnectionIdSecret(bytes)
    }

    /// A fresh secret from `rng` (the runtime passes the operating system's generator).
    pub fn generate(rng: &mut impl rand::RngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        ConnectionIdSecret(bytes)
    }
}

impl std::fmt::Debug for ConnectionIdSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionIdSecret(..)")
    }
}

/// Issues and checks connection ids.
#[derive(Clone, Debug)]
pub struct ConnectionIds {
    secret: ConnectionIdSecret,
    slot_millis: u64,
}

impl ConnectionIds {
    /// `slot_millis` is clamped to at least 1 ms.
    pub fn new(secret: ConnectionIdSecret, slot_millis: u64) -> Self {
        ConnectionIds {
            secret,
            slot_millis: slot_millis.max(1),
        }
    }

    fn slot(&self, now: Time) -> u64 {
        now.as_millis() / self.slot_millis
    }

    fn id_for(&self, src: SocketAddr, slot: u64) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.secret.0);
        let ip = match canonical_ip(src.ip()) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        h.write(&ip);
        h.write(&src.port().to_be_bytes());
        h.write(&slot.to_be_bytes());
        h.finish()
    }

    /// The connection id for a client at `src` connecting at `now`.
    pub fn issue(&self, src: SocketAddr, now: Time) -> u64 {
        self.id_for(src, self.slot(now))
    }

    /// Whether `id` was issued to `src` in the current or the previous slot.
    pub fn is_valid(&self, src: SocketAddr, id: u64, now: Time) -> bool {
        let slot = self.slot(now);
        if id == self.id_for(src, slot) {
            return true;
        }
        match slot.checked_sub(1) {
            Some(prev) => id == self.id_for(src, prev),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> ConnectionIds {
        ConnectionIds::new(ConnectionIdSecret::from_bytes([7; 16]), DEFAULT_SLOT_MILLIS)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_in_the_issuing_and_the_next_slot_only() {
        let ids = ids();
        let a = addr("192.0.2.1:5000");
        // Issued at the very end of slot 10.
        let issued = Time::from_millis(10 * 60_000 + 59_999);
        let id = ids.issue(a, issued);
        assert!(ids.is_valid(a, id, issued));
        assert!(ids.is_valid(a, id, Time::from_millis(11 * 60_000)));
        assert!(ids.is_valid(a, id, Time::from_millis(11 * 60_000 + 59_999)));
        assert!(!ids.is_valid(a, id, Time::from_millis(12 * 60_000)));
        // Not valid before it was issued either (slot 9).
        assert!(!ids.is_valid(a, id, Time::from_millis(9 * 60_000)));
    }

    #[test]
    fn one_minute_of_use_is_always_accepted() {
        let ids = ids();
        let a = addr("192.0.2.1:5000");
        for issued_ms in [0u64, 1, 30_000, 59_999, 60_000, 123_456_789] {
            let issued = Time::from_millis(issued_ms);
            let id = ids.issue(a, issued);
            assert!(ids.is_valid(a, id, issued.saturating_add_millis(60_000)));
            assert!(!ids.is_valid(a, id, issued.saturating_add_millis(120_000)));
        }
    }

    #[test]
    fn bound_to_the_source_address_and_port() {
        let ids = ids();
        let now = Time::from_secs(1000);
        let id = ids.issue(addr("192.0.2.1:5000"), now);
        assert!(!ids.is_valid(addr("192.0.2.2:5000"), id, now));
        assert!(!ids.is_valid(addr("192.0.2.1:5001"), id, now));
        // IPv4 and its IPv4-mapped IPv6 form are the same client.
        assert!(ids.is_valid(addr("[::ffff:192.0.2.1]:5000"), id, now));
        let id6 = ids.issue(addr("[2001:db8::1]:5000"), now);
        assert!(ids.is_valid(addr("[2001:db8::1]:5000"), id6, now));
        assert!(!ids.is_valid(addr("[2001:db8::2]:5000"), id6, now));
    }

    #[test]
    fn another_secret_rejects_the_id() {
        let now = Time::from_secs(1000);
        let a = addr("192.0.2.1:5000");
        let id = ids().issue(a, now);
        let other =
            ConnectionIds::new(ConnectionIdSecret::from_bytes([8; 16]), DEFAULT_SLOT_MILLIS);
        assert!(!other.is_valid(a, id, now));
    }

    #[test]
    fn generated_secrets_differ() {
        let mut rng = rand::rngs::mock::StepRng::new(1, 1);
        let a = ConnectionIdSecret::generate(&mut rng);
        let b = ConnectionIdSecret::generate(&mut rng);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "ConnectionIdSecret(..)");
    }
}
