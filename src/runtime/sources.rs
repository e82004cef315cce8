//! Per-source accounting shared by every worker, in fixed memory: a request rate limiter and
//! open-connection counts, both keyed by [`source_key`] (an IPv4 address, or an IPv6 /64).
//!
//! Both are count-min sketches: `ROWS` rows of `slots` counters each, every source hashed to
//! one counter per row with a per-process random seed (an attacker cannot pick addresses that
//! collide), and a source's figure is the smallest of its counters. A flood from many
//! addresses therefore cannot grow them: it can only raise counters, and a well-behaved source
//! is wrongly limited only when every one of its counters is shared with a heavy source
//! (probability about `(heavy sources / slots)^ROWS`). The counters are atomics, so workers
//! share them without a lock; concurrent updates of one source may let a request or a
//! connection more through (at most one per worker), never fewer.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::conn::source_key;

/// Rows of each sketch.
const ROWS: usize = 2;

/// One counter index per row for `key`. The hashers are seeded randomly per process: the
/// keys come from the network.
fn slots(hashers: &[foldhash::fast::RandomState; ROWS], mask: usize, key: u128) -> [usize; ROWS] {
    let mut out = [0; ROWS];
    for (o, h) in out.iter_mut().zip(hashers) {
        *o = (h.hash_one(key) as usize) & mask;
    }
    out
}

fn new_hashers() -> [foldhash::fast::RandomState; ROWS] {
    std::array::from_fn(|_| foldhash::fast::RandomState::default())
}

/// Rounds a configured slot count to a power of two in `16..=2^24`.
fn row_len(slots: usize) -> usize {
    slots.clamp(16, 1 << 24).next_power_of_two()
}

/// A token-bucket rate limit per source (rate `r` per second, burst `b`), as the generic cell
/// rate algorithm (GCRA, ITU-T I.371): each counter holds a source's theoretical arrival time,
/// in nanoseconds since the limiter was made; a request is admitted when that time, moved one
/// emission interval (`1/r`) on, is at most `b` intervals ahead of now. Memory:
/// `ROWS * slots * 8` bytes, fixed at construction.
pub struct SourceRateLimiter {
    rows: [Box<[AtomicU64]>; ROWS],
    hashers: [foldhash::fast::RandomState; ROWS],
    mask: usize,
    /// Nanoseconds between two requests at the sustained rate.
    interval_ns: u64,
    /// How far ahead of now a source's arrival time may run: `burst * interval_ns`.
    tolerance_ns: u64,
    origin: Instant,
}

impl SourceRateLimiter {
    /// `per_second` requests sustained (at least 1), `burst` requests at once (at least 1),
    /// `slots` counters per row (rounded to a power of two, 16 to 2^24).
    pub fn new(per_second: u32, burst: u32, slots: usize) -> Self {
        let len = row_len(slots);
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        SourceRateLimiter {
            rows: std::array::from_fn(|_| (0..len).map(|_| AtomicU64::new(0)).collect()),
            hashers: new_hashers(),
            mask: len - 1,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1))),
            origin: Instant::now(),
        }
    }

    /// Bytes of counters (fixed).
    pub fn memory_bytes(&self) -> usize {
        ROWS * (self.mask + 1) * std::mem::size_of::<AtomicU64>()
    }

    /// Takes one request of `ip` at `now`: true when it is within the limit (and counted),
    /// false when it is over (and nothing changes).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let at = slots(&self.hashers, self.mask, source_key(ip));
        // The source's arrival time is the smallest of its counters (count-min); a counter in
        // the past means a full bucket.
        let tat = at
            .iter()
            .zip(&self.rows)
            .map(|(i, row)| row[*i].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            .max(now_ns);
        let next = tat.saturating_add(self.interval_ns);
        if next - now_ns > self.tolerance_ns {
            return false;
        }
        // Conservative update: raise each counter to the new estimate, never lower one that a
        // heavier source sharing it has pushed further.
        for (i, row) in at.iter().zip(&self.rows) {
            row[*i].fetch_max(next, Ordering::Relaxed);
        }
        true
    }
}

/// Open connections per source across every worker, for a per-source cap. Memory:
/// `ROWS * slots * 4` bytes, fixed at construction.
pub struct SourceCounts {
    rows: [Box<[AtomicU32]>; ROWS],
    hashers: [foldhash::fast::RandomState; ROWS],
    mask: usize,
}

impl SourceCounts {
    /// `slots` counters per row (rounded to a power of two, 16 to 2^24).
    pub fn new(slots: usize) -> Self {
        let len = row_len(slots);
        SourceCounts {
            rows: std::array::from_fn(|_| (0..len).map(|_| AtomicU32::new(0)).collect()),
            hashers: new_hashers(),
            mask: len - 1,
        }
    }

    /// Connections open from `key` (an upper bound: see the module comment).
    pub fn open(&self, key: u128) -> u32 {
        slots(&self.hashers, self.mask, key)
            .iter()
            .zip(&self.rows)
            .map(|(i, row)| row[*i].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Counts a connection of `key` unless `cap` (> 0) are already open; returns whether it
    /// was counted. Every counted connection must be [`SourceCounts::release`]d once.
    pub fn acquire(&self, key: u128, cap: usize) -> bool {
        if cap > 0 && self.open(key) as usize >= cap {
            return false;
        }
        for (i, row) in slots(&self.hashers, self.mask, key).iter().zip(&self.rows) {
            row[*i].fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Forgets one connection of `key` counted by [`SourceCounts::acquire`].
    pub fn release(&self, key: u128) {
        for (i, row) in slots(&self.hashers, self.mask, key).iter().zip(&self.rows) {
            let _ = row[*i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_the_sustained_rate() {
        let l = SourceRateLimiter::new(10, 5, 1024);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..5 {
            assert!(l.admit(a, t0), "request {i} of the burst");
        }
        assert!(!l.admit(a, t0), "the sixth at once is over");
        // One interval (100 ms) later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit(a, t1));
        assert!(!l.admit(a, t1));
        // After a long pause the whole burst is back, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.admit(a, t2));
        }
        assert!(!l.admit(a, t2));
    }

    #[test]
    fn one_source_over_its_limit_leaves_the_others_alone() {
        // 2^16 counters per row: 200 sources all meeting the abuser in every row is unlikely
        // enough (about 2^-24) for a test that asserts they do not.
        let l = SourceRateLimiter::new(100, 10, 1 << 16);
        let t0 = Instant::now();
        for _ in 0..1000 {
            l.admit(ip("192.0.2.66"), t0);
        }
        assert!(!l.admit(ip("192.0.2.66"), t0));
        for n in 1..=200u8 {
            let other = IpAddr::from([198, 51, 100, n]);
            assert!(l.admit(other, t0), "{other} is not limited");
        }
    }

    #[test]
    fn ipv6_sources_share_a_limit_per_64() {
        let l = SourceRateLimiter::new(1, 2, 1024);
        let t0 = Instant::now();
        assert!(l.admit(ip("2001:db8:1:2::1"), t0));
        assert!(l.admit(ip("2001:db8:1:2::99"), t0));
        assert!(!l.admit(ip("2001:db8:1:2:ffff::1"), t0), "same /64");
        assert!(l.admit(ip("2001:db8:1:3::1"), t0), "another /64");
    }

    #[test]
    fn a_flood_from_many_addresses_does_not_grow_memory_or_lock_out_a_regular() {
        let l = SourceRateLimiter::new(1000, 1000, 1 << 14);
        let before = l.memory_bytes();
        let t0 = Instant::now();
        let regular = ip("203.0.113.7");
        for n in 0..200_000u32 {
            l.admit(IpAddr::from((0x0a00_0000 + n).to_be_bytes()), t0);
        }
        assert_eq!(l.memory_bytes(), before);
        assert_eq!(before, 2 * (1 << 14) * 8);
        // 200,000 sources with one request each put no slot anywhere near 1,000 requests.
        assert!(l.admit(regular, t0));
    }

    #[test]
    fn connection_counts_cap_and_release() {
        // Seeds are random per process: with 2^16 counters per row, two sources share every
        // row's counter with odds of 2^-32, small enough for a test that asserts they do not.
        let c = SourceCounts::new(1 << 16);
        let k = source_key(ip("127.0.0.2"));
        let other = source_key(ip("127.0.0.3"));
        assert!(c.acquire(k, 2));
        assert!(c.acquire(k, 2));
        assert!(!c.acquire(k, 2), "third over the cap");
        assert_eq!(c.open(k), 2);
        assert!(c.acquire(other, 2));
        c.release(k);
        assert!(c.acquire(k, 2));
        c.release(k);
        c.release(k);
        c.release(k);
        assert_eq!(c.open(k), 0, "never below zero");
        assert!(c.acquire(k, 0), "0: no cap");
    }
}
