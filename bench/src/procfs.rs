//! What a server process costs, read from `/proc`: CPU time (user + system,
//! all threads) and resident memory.

use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` times (Linux's `USER_HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields start after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .map_or(Ok(0), |(u, s)| Ok::<_, std::num::ParseIntError>(u.parse::<u64>()? + s.parse::<u64>()?))?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// CPU time `pid` and every process below it have used so far (a gateway
/// made of several processes, such as Pushpin's runner and its services).
pub fn tree_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut total = cpu_time(pid)?;
    for child in descendants(pid) {
        total += cpu_time(child).unwrap_or_default();
    }
    Ok(total)
}

/// Every live process below `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Resident set size, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or_else(|| anyhow::anyhow!("bad VmRSS"))?.parse()?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(rss_bytes(pid).unwrap() > 1 << 20);
        assert!(cpu_time(u32::MAX).is_err());
    }
}
