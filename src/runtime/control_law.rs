//! CoDel's control law (RFC 8289 §5), shared by the shedding of every front-end: the HTTP
//! listeners shed connections whose event-loop turn fell behind, the datagram sockets shed
//! datagrams that waited in the kernel's queue. Each decides what is late; this law decides
//! which late ones are shed.

use std::time::{Duration, Instant};

/// When to shed while something stays late (RFC 8289 §5).
///
/// - Late without a break for `interval` (twice the shedding delay) starts an episode, and
///   the first late one after that is shed; while things stay late, the next shed is due
///   `interval / sqrt(count)` after the previous one was (`count` the sheds of this episode),
///   so the pace grows with the overload's length.
/// - Something fresh ([`ControlLaw::fresh`]) ends the episode. A new one within
///   `16 x interval` of the end of the last resumes near its pace (`count - 2`).
/// - The schedule runs at most one interval behind `now`: sheds that fell due while nothing
///   was judged (a long batch or turn) are not piled up.
#[derive(Clone, Debug)]
pub(crate) struct ControlLaw {
    interval: Duration,
    /// Since when things have been late without a break.
    pub(crate) late_since: Option<Instant>,
    /// Shedding (an episode): when the next shed is due.
    pub(crate) next: Option<Instant>,
    /// Sheds of the current (or last) episode.
    pub(crate) count: u32,
    /// When the last episode ended.
    ended: Option<Instant>,
}

impl ControlLaw {
    /// The law for shedding delay `target`: an interval of twice it (at least 1 ms).
    pub(crate) fn new(target: Duration) -> Self {
        ControlLaw {
            interval: target.saturating_mul(2).max(Duration::from_millis(1)),
            late_since: None,
            next: None,
            count: 0,
            ended: None,
        }
    }

    /// Something judged at `now` was fresh: the episode, if any, ends.
    pub(crate) fn fresh(&mut self, now: Instant) {
        self.late_since = None;
        if self.next.take().is_some() {
            self.ended = Some(now);
        }
    }

    /// Something judged at `now` was late: whether a shed is due. Changes nothing but the
    /// start of the lateness; [`ControlLaw::shed`] takes the shed.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        let since = *self.late_since.get_or_insert(now);
        match self.next {
            None => now.saturating_duration_since(since) >= self.interval,
            Some(next) => now >= next,
        }
    }

    /// A shed at `now` (after [`ControlLaw::due`] said so): counts it and schedules the next.
    pub(crate) fn shed(&mut self, now: Instant) {
        let from = match self.next {
            Some(next) => {
                self.count = self.count.saturating_add(1);
                next
            }
            None => {
                // A new episode: CoDel resumes near the last pace when it ended recently.
                let recent = self
                    .ended
                    .is_some_and(|t| now.saturating_duration_since(t) < self.interval * 16);
                self.count = if recent && self.count > 2 {
                    self.count - 2
                } else {
                    1
                };
                now
            }
        };
        let from = from.max(now.checked_sub(self.interval).unwrap_or(now));
        self.next = Some(from + self.interval.div_f64(f64::from(self.count).sqrt()));
    }
}
