//! Stateless BEP 15 connection ids: a keyed hash of the client's address and a time slot.
//!
//! BEP 15 ("UDP connections / spoofing"): the connection id proves that the client receives
//! packets at its source address, like a SYN cookie; clients use an id for up to one minute and
//! trackers should accept it until two minutes after sending it. We store nothing per client:
//! the id is SipHash-1-3 (the keyed hash of Rust's standard hash maps: a pseudo-random function
//! of its key, at two thirds the cost of SipHash-2-4), keyed with a 128-bit secret drawn at
//! start, over the canonical source IP (16 bytes, IPv4 as IPv4-mapped) and the time slot
//! number (`now / slot length`, 60 s by default), with the hash's low [`SLOT_BITS`] bits
//! replaced by the slot number modulo 16, so that a check knows which slot to hash (one hash
//! per request, not one per slot still accepted; 60 bits of the hash remain). The source port
//! is left out: the id proves the address, which is what spoofing forges, and clients reuse
//! one id from several sockets (libtorrent keeps one per tracker for the whole process,
//! whichever local socket sends), as a NAT may change the port between packets too. An id is
//! accepted in the slot it was issued in and in as many following slots as
//! [`MIN_LIFETIME_MILLIS`] needs (two of 60 s), so every id lives at least 120 s, as BEP 15
//! asks, and less than 180 s. Time is passed in.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

use super::tracker::canonical_ip;
use crate::engine::Time;

/// Default length of a connection-id time slot.
pub const DEFAULT_SLOT_MILLIS: u64 = 60_000;

/// Every connection id is accepted at least this long after it was issued (BEP 15: "two
/// minutes").
pub const MIN_LIFETIME_MILLIS: u64 = 120_000;

/// Most earlier slots an id is accepted from; slots are never shorter than
/// `MIN_LIFETIME_MILLIS / MAX_SLOTS_BACK`.
const MAX_SLOTS_BACK: u64 = 8;

/// Low bits of an id that carry its slot number (modulo 16): enough to tell apart the
/// `MAX_SLOTS_BACK + 1` slots an id may come from.
pub const SLOT_BITS: u32 = 4;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const _: () = assert!(MAX_SLOTS_BACK < 1 << SLOT_BITS);

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
    /// Earlier slots whose ids are still accepted.
    slots_back: u64,
}

impl ConnectionIds {
    /// `slot_millis` is clamped to at least 15 s (`MIN_LIFETIME_MILLIS / 8`), so that an id is
    /// looked for in at most nine slots.
    pub fn new(secret: ConnectionIdSecret, slot_millis: u64) -> Self {
        let slot_millis = slot_millis.max(MIN_LIFETIME_MILLIS / MAX_SLOTS_BACK);
        ConnectionIds {
            secret,
            slot_millis,
            // Issued at the very end of slot `k`, an id must still be accepted
            // `MIN_LIFETIME_MILLIS` later, in slot `k + slots_back`.
            slots_back: MIN_LIFETIME_MILLIS.div_ceil(slot_millis),
        }
    }

    fn slot(&self, now: Time) -> u64 {
        now.as_millis() / self.slot_millis
    }

    fn id_for(&self, src: SocketAddr, slot: u64) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.secret.0);
        let ip = match canonical_ip(src.ip()) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        // One write of the 24 bytes (address, slot): no partial-block buffering. (Shorter
        // inputs for IPv4, 12 or 16 bytes, measured more instructions per id, not fewer.)
        let mut input = [0u8; 24];
        input[..16].copy_from_slice(&ip);
        input[16..].copy_from_slice(&slot.to_be_bytes());
        h.write(&input);
        (h.finish() & !SLOT_MASK) | (slot & SLOT_MASK)
    }

    /// The connection id for a client at `src` connecting at `now`.
    pub fn issue(&self, src: SocketAddr, now: Time) -> u64 {
        self.id_for(src, self.slot(now))
    }

    /// Whether `id` was issued to `src` in the current slot or one of the `slots_back` before
    /// it: at least [`MIN_LIFETIME_MILLIS`] ago, whatever the point in its slot it was issued.
    pub fn is_valid(&self, src: SocketAddr, id: u64, now: Time) -> bool {
        let slot = self.slot(now);
        // The one slot, of the last 16, whose number has the id's low bits.
        let back = slot.wrapping_sub(id) & SLOT_MASK;
        back <= self.slots_back
            && slot
                .checked_sub(back)
                .is_some_and(|s| id == self.id_for(src, s))
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
    fn valid_in_the_issuing_and_the_next_two_slots_only() {
        let ids = ids();
        let a = addr("192.0.2.1:5000");
        // Issued at the very end of slot 10.
        let issued = Time::from_millis(10 * 60_000 + 59_999);
        let id = ids.issue(a, issued);
        assert!(ids.is_valid(a, id, issued));
        assert!(ids.is_valid(a, id, Time::from_millis(11 * 60_000)));
        assert!(ids.is_valid(a, id, Time::from_millis(12 * 60_000 + 59_999)));
        assert!(!ids.is_valid(a, id, Time::from_millis(13 * 60_000)));
        // Not valid before it was issued either (slot 9).
        assert!(!ids.is_valid(a, id, Time::from_millis(9 * 60_000)));
    }

    #[test]
    fn two_minutes_are_always_accepted_and_three_never() {
        for slot in [1, 15_000, 40_000, DEFAULT_SLOT_MILLIS, 120_000, 500_000] {
            let ids = ConnectionIds::new(ConnectionIdSecret::from_bytes([7; 16]), slot);
            let a = addr("192.0.2.1:5000");
            for issued_ms in [0u64, 1, 30_000, 59_999, 60_000, 119_999, 123_456_789] {
                let issued = Time::from_millis(issued_ms);
                let id = ids.issue(a, issued);
                let last = issued.saturating_add_millis(MIN_LIFETIME_MILLIS);
                assert!(ids.is_valid(a, id, last), "slot {slot}, issued {issued_ms}");
                let slot = ids.slot_millis;
                let never = issued.saturating_add_millis((ids.slots_back + 1) * slot);
                assert!(
                    !ids.is_valid(a, id, never),
                    "slot {slot}, issued {issued_ms}"
                );
            }
            assert!(ids.slots_back <= MAX_SLOTS_BACK);
        }
    }

    #[test]
    fn bound_to_the_source_address_not_its_port() {
        let ids = ids();
        let now = Time::from_secs(1000);
        let id = ids.issue(addr("192.0.2.1:5000"), now);
        assert!(!ids.is_valid(addr("192.0.2.2:5000"), id, now));
        // Another socket of the same client (or a NAT's new port) keeps the id.
        assert!(ids.is_valid(addr("192.0.2.1:5001"), id, now));
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

    /// An id names its slot in its low bits, and changing any bit of it (those included)
    /// makes it invalid.
    #[test]
    fn the_low_bits_name_the_slot_and_every_bit_counts() {
        let ids = ids();
        for (a, slot) in [("192.0.2.1:5000", 10u64), ("[2001:db8::1]:1", 37)] {
            let a = addr(a);
            let issued = Time::from_millis(slot * 60_000 + 1);
            let id = ids.issue(a, issued);
            assert_eq!(id & SLOT_MASK, slot & SLOT_MASK);
            for bit in 0..64 {
                for later in 0..=2 {
                    let now = Time::from_millis((slot + later) * 60_000);
                    assert!(ids.is_valid(a, id, now));
                    assert!(!ids.is_valid(a, id ^ (1 << bit), now), "bit {bit}");
                }
            }
        }
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
