//! How many CPUs this process may use: its affinity mask, lowered to its
//! cgroup (v2) CPU quota when one is set. At least 1.
//!
//! `std::thread::available_parallelism` answers the same question, but it
//! allocates (it reads the cgroup files into `Vec`s), and conc must not
//! abort when the heap is exhausted. Here every buffer is on the stack:
//! `sched_getaffinity` for the mask, and `/proc/self/cgroup` then each
//! `cpu.max` from the process's cgroup up to the root, read with plain
//! `open`/`read` into fixed arrays. A cgroup path too long for the buffer
//! is treated as "no quota".

/// The number of CPUs this process may run on (at least 1).
pub fn available() -> usize {
    let mask = affinity().unwrap_or_else(online);
    match quota() {
        Some(q) => mask.min(q).max(1),
        None => mask.max(1),
    }
}

fn affinity() -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is writable for its whole size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the set was filled in by the kernel.
    let n = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

fn online() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Reads the NUL-terminated `path` into `buf`: the bytes read, or None.
fn read_file<'a>(path: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: path is NUL-terminated (every caller builds it so).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: the rest of buf is writable.
        let r = unsafe { libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Some(&buf[..n])
}

/// The smallest whole-CPU quota of the cgroup v2 hierarchy above this
/// process, or None when none is set (or it cannot be read).
fn quota() -> Option<usize> {
    let mut cg = [0u8; 4096];
    let text = read_file(b"/proc/self/cgroup\0", &mut cg)?;
    let line = text
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"0::"))?;
    let mut rel = &line[3..];
    const ROOT: &[u8] = b"/sys/fs/cgroup";
    const FILE: &[u8] = b"/cpu.max\0";
    let mut path = [0u8; 1024];
    let mut best: Option<usize> = None;
    loop {
        let rel_trim = rel.strip_suffix(b"/").unwrap_or(rel);
        let total = ROOT.len() + rel_trim.len() + FILE.len();
        if total > path.len() || rel_trim.contains(&0) {
            return best;
        }
        path[..ROOT.len()].copy_from_slice(ROOT);
        path[ROOT.len()..ROOT.len() + rel_trim.len()].copy_from_slice(rel_trim);
        path[ROOT.len() + rel_trim.len()..total].copy_from_slice(FILE);
        let mut max = [0u8; 64];
        if let Some(q) = read_file(&path[..total], &mut max).and_then(parse_cpu_max) {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
        match rel_trim.iter().rposition(|&b| b == b'/') {
            Some(i) if !rel_trim.is_empty() => rel = &rel_trim[..i],
            _ => return best,
        }
    }
}

/// `"quota period"` from `cpu.max` as whole CPUs (at least 1); None for
/// `"max ..."` or anything unreadable.
fn parse_cpu_max(text: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(usize::try_from(quota / period).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_std() {
        let std_n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(available(), std_n);
    }

    #[test]
    fn cpu_max_parsing() {
        assert_eq!(parse_cpu_max(b"max 100000\n"), None);
        assert_eq!(parse_cpu_max(b"200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max(b"50000 100000\n"), Some(1));
        assert_eq!(parse_cpu_max(b"garbage"), None);
    }
}
