//! Server (and self) resource sampling from `/proc`: CPU time (utime + stime of every thread,
//! `/proc/PID/stat` fields 14 and 15) and resident set size (field 24).

use std::io;

/// One sample of a process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time, microseconds (clock-tick resolution, usually 10 ms).
    pub cpu_us: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Parses `/proc/PID/stat` text into (utime + stime ticks, rss pages).
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may contain spaces and parentheses: fields after it start
    // after the last ')'. Field 3 (state) is index 0 of the rest.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss: i64 = fields.get(21)?.parse().ok()?;
    Some((utime + stime, rss.max(0) as u64))
}

/// Samples process `pid`, or this process when `pid` is `None`.
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path)?;
    let (ticks, pages) = parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat"))?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Ok(ProcSample {
        cpu_us: ticks * 1_000_000 / hz,
        rss_bytes: pages * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_tricky_command_name() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some((300, 3000)));
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_stat("no paren"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0);
    }
}
