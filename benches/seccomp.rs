//! What installing the default profile's seccomp filter costs a sandbox's plugin process.
//!
//! The kernel converts and JIT-compiles each program, and runs it once for every system call
//! number to learn which calls it allows whatever their arguments (the seccomp action
//! cache). Two ways, interleaved `SECCOMP_ROUNDS` times (default 2000):
//!
//! - `three programs`: what `seccomp::compile` made before the dispatch tree (the x32
//!   guard, the `clone3` one and `seccompiler`'s program of the whole deny list);
//! - `dispatch tree`: what it makes now (one program: the tree, then `seccompiler`'s
//!   program of the calls with argument rules).
//!
//! Each sample forks a child that sets `no_new_privs`, installs the programs and `_exit`s;
//! the time is that of the `seccomp()` calls alone, taken in the child with
//! `CLOCK_MONOTONIC` and sent back through a pipe. It prints the median, p10 and p90 of each
//! way and the ratio of the medians. Run: `cargo bench --bench seccomp`.

use std::os::fd::AsRawFd;

use sandbox_runner::seccomp::{compile, compile_without_dispatch, SeccompConfig};
use seccompiler::BpfProgram;

fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Forks a child that installs `progs` and reports how long the `seccomp()` calls took.
fn sample(progs: &[BpfProgram]) -> u64 {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    let fprogs: Vec<libc::sock_fprog> = progs
        .iter()
        .map(|p| libc::sock_fprog {
            len: p.len() as libc::c_ushort,
            filter: p.as_ptr() as *mut libc::sock_filter,
        })
        .collect();
    // SAFETY: the child makes only raw system calls on memory prepared before the fork,
    // then _exits; this process has no other thread.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let mut ok = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
            let t0 = now_ns();
            for f in &fprogs {
                ok &= libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    f as *const libc::sock_fprog,
                ) == 0;
            }
            let dt: u64 = if ok { now_ns() - t0 } else { u64::MAX };
            libc::write(w.as_raw_fd(), (&dt as *const u64).cast(), 8);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut buf = [0u8; 8];
    let n = rustix::io::read(&r, &mut buf).expect("read");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let dt = u64::from_ne_bytes(buf);
    assert!(
        n == 8 && dt != u64::MAX,
        "the child could not install the filter"
    );
    dt
}

fn stats(v: &mut [u64]) -> (f64, f64, f64) {
    v.sort_unstable();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)] as f64 / 1000.0;
    (at(50), at(10), at(90))
}

fn main() {
    let rounds: usize = std::env::var("SECCOMP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cfg = SeccompConfig::default();
    let ways = [
        (
            "three programs",
            compile_without_dispatch(&cfg).expect("compile"),
        ),
        ("dispatch tree", compile(&cfg).expect("compile")),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(rounds); ways.len()];
    for i in 0..rounds + 20 {
        for (w, (_, progs)) in ways.iter().enumerate() {
            let dt = sample(progs);
            if i >= 20 {
                samples[w].push(dt);
            }
        }
    }
    println!("installing the default profile's seccomp filter, {rounds} rounds interleaved");
    let mut medians = Vec::new();
    for ((name, progs), v) in ways.iter().zip(samples.iter_mut()) {
        let (p50, p10, p90) = stats(v);
        let lens: Vec<String> = progs.iter().map(|p| p.len().to_string()).collect();
        println!(
            "  {name:15} ({} instructions): median {p50:7.1} µs  p10 {p10:7.1}  p90 {p90:7.1}",
            lens.join(" + ")
        );
        medians.push(p50);
    }
    println!(
        "  dispatch tree / three programs: {:.2}x",
        medians[1] / medians[0]
    );
}
