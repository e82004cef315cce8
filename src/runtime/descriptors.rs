//! File-descriptor budget of the process: raise the soft `RLIMIT_NOFILE` to the hard limit at
//! start, and say exactly what to change when the configured connection limits do not fit.
//!
//! Each open connection, listener, poller and reserve descriptor is one descriptor; a process
//! that runs out gets `EMFILE` from `accept`, which the runtime answers by backing off (see
//! [`super::RuntimeConfig::descriptor_reserve`]). Checking at start turns that surprise into
//! one warning with the fix.

use std::io;

/// The soft and hard `RLIMIT_NOFILE` after [`raise_soft_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorLimits {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit is taken as
/// `/proc/sys/fs/nr_open`, the most the kernel accepts). Returns the limits now in force.
pub fn raise_soft_limit() -> io::Result<DescriptorLimits> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut target = lim.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    Ok(DescriptorLimits {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// The warning to log when `needed` descriptors do not fit in `limits`, naming the fix.
pub fn shortfall(needed: u64, limits: DescriptorLimits) -> Option<String> {
    (needed > limits.soft).then(|| {
        format!(
            "the configured connection limits need up to {needed} file descriptors but \
             RLIMIT_NOFILE is {} (hard {}): raise it (systemd unit: LimitNOFILE={needed}; \
             shell: ulimit -n {needed}) or lower ppstp.max_connections, \
             bt_http.max_connections, overlay.max_links or server.workers; until then \
             accepting backs off when descriptors run out",
            limits.soft, limits.hard
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_shortfalls_name_the_fix() {
        let l = raise_soft_limit().unwrap();
        assert!(l.soft >= 64);
        assert!(l.soft <= l.hard || l.hard == libc::RLIM_INFINITY);
        assert!(shortfall(l.soft, l).is_none());
        let msg = shortfall(l.soft + 1, l).unwrap();
        assert!(
            msg.contains(&format!("LimitNOFILE={}", l.soft + 1)),
            "{msg}"
        );
        assert!(msg.contains(&format!("ulimit -n {}", l.soft + 1)), "{msg}");
    }
}
