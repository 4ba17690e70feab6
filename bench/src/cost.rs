//! What one volley process cost: wall time, user+system CPU from wait4(2), and peak RSS and
//! open descriptors polled from /proc while it runs.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one volley process cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss_kib: u64,
    /// The most descriptors it held open at once (sampled every 50 ms).
    pub peak_fds: u64,
}

/// A finished volley process: its cost, exit status and what it printed.
pub struct Ran {
    pub cost: Cost,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Hosts per outcome kind, from `--json` output; a line that is not a host record ends the
    /// benchmark.
    pub fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in self.stdout.lines() {
            let record = volley_tests::report::parse_record(line).unwrap_or_else(|problem| {
                eprintln!("volley printed a line that is not a host record ({problem}): {line}");
                std::process::exit(1);
            });
            *counts.entry(record.outcome).or_insert(0) += 1;
        }
        counts
    }
}

/// Runs `command` to the end with stdout discarded and returns its cost. A failed run ends the
/// benchmark with the command's stderr: its figures would mean nothing.
pub fn measure(command: Command) -> Cost {
    let ran = run_with(command, Stdio::null());
    if ran.status != 0 {
        eprintln!(
            "volley exited with status {}; its stderr:\n{}",
            ran.status, ran.stderr
        );
        std::process::exit(1);
    }
    ran.cost
}

/// Runs `command` to the end, whatever its exit status, keeping its stdout and stderr.
pub fn run(command: Command) -> Ran {
    run_with(command, Stdio::piped())
}

fn run_with(mut command: Command, stdout: Stdio) -> Ran {
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let started = Instant::now();
    // Reaped by wait4 below, which std's Child cannot do while also reporting CPU time.
    #[allow(clippy::zombie_processes)]
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id();
    let watch = watch_peaks(pid);
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let (status, cpu) = wait_with_cpu(pid);
    let wall = started.elapsed();
    let (peak_rss_kib, peak_fds) = watch.join().unwrap_or((0, 0));
    Ran {
        cost: Cost {
            wall,
            cpu,
            peak_rss_kib,
            peak_fds,
        },
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
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

/// The load averages, as `uptime` shows them: the machine is shared, and figures are read with
/// them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Open descriptors of `pid`; `None` once it is gone.
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Polls the child's high-water RSS (VmHWM) every 10 ms and its open descriptors every 50 ms
/// until it exits, and returns the peaks. `ru_maxrss` cannot serve: Linux carries the forking
/// parent's peak into it across exec.
fn watch_peaks(pid: u32) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut rss, mut fds) = (0, 0);
        // Bounded like every load loop here: at most 10 minutes of 10 ms polls.
        for round in 0..60_000u32 {
            match status_kib(pid, "VmHWM") {
                Some(hwm) => rss = hwm,
                // A zombie has no memory left to report; its peak was read before.
                None => break,
            }
            if round % 5 == 0 {
                fds = fds.max(open_fds(pid).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (rss, fds)
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
