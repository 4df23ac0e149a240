//! Process CPU time and memory, read from Linux's `/proc` (no `libc` dependency).
//!
//! The Raft benchmarks run on one thread, so the CPU time of the main thread is the CPU time
//! of the process. [`cpu_time`] reads it from `/proc/self/schedstat` (nanoseconds of user and
//! system time on a CPU), which is as precise as `getrusage` and much finer than the 10 ms
//! clock ticks of `utime`/`stime` in `/proc/self/stat`; that file is the fallback where the
//! kernel has no schedstat.

use std::io;
use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in Linux's ABI).
const USER_HZ: u64 = 100;

/// User + system CPU time consumed so far by this process's main thread (the whole process
/// for the single-threaded benchmarks).
///
/// # Errors
/// If neither `/proc/self/schedstat` nor `/proc/self/stat` can be read and parsed (not Linux).
pub fn cpu_time() -> io::Result<Duration> {
    match std::fs::read_to_string("/proc/self/schedstat") {
        Ok(text) => parse_schedstat(&text),
        Err(_) => parse_stat(&std::fs::read_to_string("/proc/self/stat")?),
    }
}

/// User + system CPU time consumed so far by all threads of this process, at the 10 ms
/// resolution of `/proc/self/stat` (for multi-threaded benchmarks measured over seconds).
///
/// # Errors
/// If `/proc/self/stat` cannot be read and parsed (not Linux).
pub fn process_cpu_time() -> io::Result<Duration> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat")?)
}

/// User + system CPU time consumed so far by all threads of process `pid` (another
/// process: a server under test), at the 10 ms resolution of `/proc/<pid>/stat`.
///
/// # Errors
/// If the process is gone or its `stat` cannot be parsed.
pub fn pid_cpu_time(pid: u32) -> io::Result<Duration> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// `/proc/self/schedstat`: "run-ns wait-ns timeslices".
fn parse_schedstat(text: &str) -> io::Result<Duration> {
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse::<u64>().ok())
        .ok_or_else(|| malformed("/proc/self/schedstat"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `/proc/self/stat`: utime and stime are fields 14 and 15, in clock ticks. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted after its `)`.
fn parse_stat(text: &str) -> io::Result<Duration> {
    let after_comm =
        text.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| malformed("stat"))?;
    // After ")" the fields start at field 3 (state): utime is the 12th, stime the 13th.
    let mut fields = after_comm.split_whitespace().skip(11);
    let mut next_ticks = || {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| malformed("/proc/self/stat"))
    };
    let ticks = next_ticks()? + next_ticks()?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
///
/// # Errors
/// If `/proc/self/status` cannot be read or has no `VmHWM` line (not Linux).
pub fn peak_rss_bytes() -> io::Result<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size of this process (`VmRSS`), in bytes.
///
/// # Errors
/// If `/proc/self/status` cannot be read or has no `VmRSS` line (not Linux).
pub fn rss_bytes() -> io::Result<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

fn status_kib(key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .ok_or_else(|| malformed("/proc/self/status"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat() {
        assert_eq!(
            parse_schedstat("358715713 193465522 83\n").unwrap(),
            Duration::from_nanos(358_715_713)
        );
    }

    #[test]
    fn parses_stat_with_spaces_in_the_command_name() {
        let stat = "4242 (raft bench) R 1 4242 4242 0 -1 4194304 100 0 0 0 35 7 0 0 20 0 1 0 \
                    12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat(stat).unwrap(), Duration::from_millis(420));
    }

    #[test]
    fn reads_this_process() {
        let before = cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_time().unwrap() >= before);
        assert!(rss_bytes().unwrap() > 0);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
