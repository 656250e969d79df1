//! The few OS calls hunt isolation needs — resource limits, the parent-death signal, thread
//! priorities, a process's data size — each behind a safe function.
#![allow(unsafe_code)]

use std::io;

/// A resource limit a runner puts on itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Private writable memory (heap, anonymous mappings, thread stacks): `RLIMIT_DATA`.
    Data,
    /// CPU seconds (SIGXCPU at the soft limit, SIGKILL at the hard one): `RLIMIT_CPU`.
    Cpu,
    /// Open file descriptors: `RLIMIT_NOFILE`.
    OpenFiles,
    /// Largest file the process may write (SIGXFSZ past it): `RLIMIT_FSIZE`.
    FileSize,
    /// Core dumps (0: none; a hunt's memory may hold other people's data): `RLIMIT_CORE`.
    Core,
}

impl Limit {
    fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Limit::Data => libc::RLIMIT_DATA,
            Limit::Cpu => libc::RLIMIT_CPU,
            Limit::OpenFiles => libc::RLIMIT_NOFILE,
            Limit::FileSize => libc::RLIMIT_FSIZE,
            Limit::Core => libc::RLIMIT_CORE,
        }
    }
}

/// Sets a limit of this process. Lowering the hard limit cannot be undone without privilege.
pub fn set_limit(limit: Limit, soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard.max(soft),
    };
    // SAFETY: `r` is a valid rlimit that outlives the call; the resource is a known constant.
    let rc = unsafe { libc::setrlimit(limit.resource(), &r) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the soft value of a limit, below its unchanged hard value: allowed without
/// privilege, up or down, as often as needed.
pub fn set_soft_limit(limit: Limit, soft: u64) -> io::Result<()> {
    let (_, hard) = get_limit(limit)?;
    set_limit(limit, soft.min(hard), hard)
}

/// The current (soft, hard) values of a limit of this process.
pub fn get_limit(limit: Limit) -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(limit.resource(), &mut r) };
    if rc == 0 {
        Ok((r.rlim_cur, r.rlim_max))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU seconds (user + system) this process has used so far, rounded up.
pub fn cpu_seconds_used() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is valid and writable for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    if rc != 0 {
        return 0;
    }
    let secs = u.ru_utime.tv_sec + u.ru_stime.tv_sec;
    let micros = u.ru_utime.tv_usec + u.ru_stime.tv_usec;
    u64::try_from(secs).unwrap_or(0) + u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000)
}

/// Asks the kernel to SIGKILL this process when the thread that started it exits: a runner
/// never outlives its worker.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the nice value of every thread of process `pid` (on Linux a nice value belongs to a
/// thread; threads created later inherit their creator's). Raising it is always allowed for
/// our own processes; lowering it needs privilege (`EACCES`/`EPERM` otherwise).
pub fn renice(pid: u32, nice: i32) -> io::Result<()> {
    let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for tid in tids {
        // SAFETY: setpriority takes plain integers; a thread that exited meanwhile gives ESRCH.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sets the nice value of the calling thread (raising it needs no privilege).
pub fn renice_this_thread(nice: i32) -> io::Result<()> {
    // SAFETY: gettid takes no arguments; setpriority takes plain integers.
    let tid = unsafe { libc::gettid() };
    // SAFETY: as above.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The private writable memory of process `pid` in bytes (`VmData`: what `RLIMIT_DATA` counts).
pub fn data_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Makes this process the kernel's first choice when the machine runs out of memory, so a
/// runner is killed before its worker or the API.
pub fn prefer_oom_kill() {
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
}

/// The name of a signal, for messages people read.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

pub const SIGABRT: i32 = libc::SIGABRT;
pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGXCPU: i32 = libc::SIGXCPU;
pub const SIGXFSZ: i32 = libc::SIGXFSZ;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_back_and_usage_is_counted() {
        let (soft, hard) = get_limit(Limit::Core).expect("getrlimit");
        assert!(soft <= hard);
        // Lowering the soft core limit is always allowed and changes what is read back.
        set_limit(Limit::Core, 0, hard).expect("setrlimit");
        assert_eq!(get_limit(Limit::Core).expect("getrlimit").0, 0);
        // Spinning moves the count (on a loaded machine the CPU second takes longer to come).
        let before = cpu_seconds_used();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while cpu_seconds_used() <= before && t.elapsed() < std::time::Duration::from_secs(60) {
            for _ in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
        assert!(cpu_seconds_used() > before, "spinning is counted");
        // A runner moves its CPU soft limit per task, up as well as down.
        let used = cpu_seconds_used();
        for soft in [used + 1000, used + 500, used + 2000] {
            set_soft_limit(Limit::Cpu, soft).expect("the soft limit moves");
            let (s, h) = get_limit(Limit::Cpu).expect("getrlimit");
            assert_eq!(s, soft.min(h));
        }
        let me = std::process::id();
        assert!(data_bytes(me).is_some_and(|b| b > 0));
        assert!(data_bytes(u32::MAX).is_none());
        assert_eq!(signal_name(SIGABRT), "SIGABRT");
    }
}
