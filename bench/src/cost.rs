//! What one volley process cost: wall time, user+system CPU from wait4(2), and peak RSS polled
//! from /proc while it runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one volley process cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss_kib: u64,
}

/// Runs `command` to the end with stdout discarded and returns its cost. A failed run ends the
/// benchmark with the command's stderr: its figures would mean nothing.
pub fn measure(mut command: Command) -> Cost {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    // Reaped by wait4 below, which std's Child cannot do while also reporting CPU time.
    #[allow(clippy::zombie_processes)]
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id();
    let peak = watch_peak_rss(pid);
    // The summary is small; read it before reaping so the pipe never fills.
    let stderr =
        std::io::read_to_string(child.stderr.expect("stderr is piped")).unwrap_or_default();
    let (status, cpu) = wait_with_cpu(pid);
    let wall = started.elapsed();
    let peak_rss_kib = peak.join().unwrap_or(0);
    if status != 0 {
        eprintln!("volley exited with status {status}; its stderr:\n{stderr}");
        std::process::exit(1);
    }
    Cost {
        wall,
        cpu,
        peak_rss_kib,
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB; `None` once the process is
/// gone or a zombie.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Polls the child's high-water RSS (VmHWM) until it exits, and returns the last value read.
/// `ru_maxrss` cannot serve: Linux carries the forking parent's peak into it across exec.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        // Bounded like every load loop here: at most 10 minutes of 10 ms polls.
        for _ in 0..60_000 {
            match status_kib(pid, "VmHWM") {
                Some(hwm) => peak = hwm,
                // A zombie has no memory left to report; its peak was read before.
                None => break,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// Reaps `pid` and returns its exit status (or 128 + signal) with its user+system CPU time,
/// which std's `wait` does not report.
fn wait_with_cpu(pid: u32) -> (i32, Duration) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; `status` and `usage` are valid for writes.
    #[allow(unsafe_code)]
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(
        reaped,
        pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (code, time(usage.ru_utime) + time(usage.ru_stime))
}
