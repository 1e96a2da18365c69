//! `--split-cores`: the server process on the first half of the machine's CPUs, the client
//! threads on the other half, set the same way for every server kind.
//!
//! Why: on a shared box the scheduler decides whether a client thread and the server
//! thread it ping-pongs with run side by side or time-share one CPU, and that decision,
//! not the server, then sets the throughput. This machine's kernel even packs runnable
//! tasks onto fewer vCPUs on purpose (`sched_vcpu_pack` on its command line) and halts an
//! idle vCPU without polling, so a run can land either way. Splitting the CPUs takes the
//! placement out of the comparison: each server gets the same cores, each client the
//! others.

use std::io;

/// The CPUs this process may run on, in order.
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is the set's.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE.
        .filter(|i| unsafe { libc::CPU_ISSET(*i, &set) })
        .collect())
}

/// The two halves: (server, client). `None` with fewer than two CPUs.
pub fn split(cpus: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus.len() < 2 {
        return None;
    }
    let (server, client) = cpus.split_at(cpus.len() / 2);
    Some((server.to_vec(), client.to_vec()))
}

/// Restricts the calling thread (and the threads and processes it starts afterwards) to
/// `cpus`.
pub fn restrict_current(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `allowed`; CPU_SET only writes inside the set for i < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &i in cpus.iter().filter(|i| **i < libc::CPU_SETSIZE as usize) {
        unsafe { libc::CPU_SET(i, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the set is initialised.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn halves_give_the_server_the_first_part() {
        assert_eq!(split(&[0, 1]), Some((vec![0], vec![1])));
        assert_eq!(split(&[0, 1, 2, 3]), Some((vec![0, 1], vec![2, 3])));
        assert_eq!(split(&[3]), None);
    }
}
