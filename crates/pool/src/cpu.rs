//! Pinning worker threads to CPUs ([`PoolConfig::pin_workers`](crate::PoolConfig)).
//!
//! A job handed to a worker on the caller's own CPU finds the caller's
//! messages in that CPU's caches, and wakes a thread there rather than an idle
//! CPU (which, on a virtual machine, may cost tens of microseconds). Linux
//! only; elsewhere nothing is pinned.

/// The most CPUs a `cpu_set_t` holds (1,024 with glibc and musl alike).
#[cfg(target_os = "linux")]
const SET_BITS: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();

/// The CPUs this process may run on (its main thread's affinity, as
/// `taskset` and cgroups set it), in ascending order; empty if unknown (a
/// machine with more CPUs than a `cpu_set_t` holds).
#[cfg(target_os = "linux")]
pub(crate) fn allowed() -> Vec<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set, which
    // `sched_getaffinity` fills, given its size; the process's id names its
    // main thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let process = libc::getpid();
        if libc::sched_getaffinity(process, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..SET_BITS)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Keeps the calling thread on `cpu` from now on.
#[cfg(target_os = "linux")]
pub(crate) fn pin_this_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= SET_BITS {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: as in `allowed`; `cpu` is within the set (checked above).
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if pinned == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPU the calling thread runs on now (it may move at any time, unless
/// pinned).
#[cfg(target_os = "linux")]
pub(crate) fn current() -> Option<usize> {
    // SAFETY: no arguments, no memory.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed() -> Vec<usize> {
    Vec::new()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_this_thread(_: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn current() -> Option<usize> {
    None
}
