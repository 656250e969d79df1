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

/// CPU seconds (user + system) process `pid` has used, all its threads together.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf takes an integer and reads nothing we own.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// The memory limit of this process's container, if it has one (cgroup v2 `memory.max`, or
/// v1 `memory.limit_in_bytes`).
pub fn container_memory_limit() -> Option<u64> {
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(v) = std::fs::read_to_string(path)
            && let Ok(n) = v.trim().parse::<u64>()
            // v1 says "no limit" with a huge number.
            && n < (1 << 60)
        {
            return Some(n);
        }
    }
    None
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

/// How far [`confine_writes`] could go on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confined {
    /// Every file-system right this build knows is handled.
    Fully,
    /// The kernel's Landlock is older than this build's: some rights are not handled.
    Partly,
    /// No Landlock (an old kernel, or disabled): only the engine's own sandbox holds.
    Not,
}

/// Confines this process (and any it would start) with Landlock: files and folders anywhere
/// may be read, but nothing may be written, created, removed, renamed or executed except under
/// `writable` — a runner's results folder. Unprivileged, and irreversible for the process.
pub fn confine_writes(writable: &std::path::Path) -> Result<Confined, String> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };
    let abi = ABI::V5;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], read)))
        .and_then(|r| r.add_rules(path_beneath_rules([writable], AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| e.to_string())?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Confined::Fully,
        RulesetStatus::PartiallyEnforced => Confined::Partly,
        RulesetStatus::NotEnforced => Confined::Not,
    })
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

    /// Each test runs in a process of its own (nextest), so confining this one is safe.
    #[test]
    fn a_confined_process_writes_only_under_its_folder() {
        let ok = tempfile::tempdir().expect("tmp");
        let other = tempfile::tempdir().expect("tmp");
        std::fs::write(other.path().join("before"), b"x").expect("write before");
        match confine_writes(ok.path()).expect("landlock") {
            Confined::Not => return, // no Landlock on this kernel: nothing to check
            Confined::Fully | Confined::Partly => {}
        }
        std::fs::write(ok.path().join("result.parquet"), b"rows").expect("inside: allowed");
        std::fs::create_dir(ok.path().join("jobs")).expect("a folder inside: allowed");
        for (what, r) in [
            (
                "create outside",
                std::fs::write(other.path().join("x"), b"x"),
            ),
            (
                "overwrite outside",
                std::fs::write(other.path().join("before"), b"y"),
            ),
            (
                "remove outside",
                std::fs::remove_file(other.path().join("before")),
            ),
            (
                "create in /tmp",
                std::fs::write(
                    std::env::temp_dir().join(format!("sluice-escape-{}", std::process::id())),
                    b"x",
                ),
            ),
        ] {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{what}: {e}");
        }
        // Reading is still allowed everywhere (lakes are local folders).
        assert_eq!(
            std::fs::read(other.path().join("before")).expect("read"),
            b"x"
        );
    }

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
        assert!(
            cpu_seconds_of(me).is_some_and(|s| s > 0.5),
            "{:?}",
            cpu_seconds_of(me)
        );
        assert!(cpu_seconds_of(u32::MAX).is_none());
        assert!(data_bytes(u32::MAX).is_none());
        assert_eq!(signal_name(SIGABRT), "SIGABRT");
    }
}
