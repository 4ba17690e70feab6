//! Big files: streamed with bounded memory on both sides, and never left half-written when
//! volley is killed in the middle.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use volley_tests::RunningProcess;

use crate::RUN_DEADLINE;
use crate::deployment::{Deployment, record, text};

const SIZE: usize = 100 << 20;

/// `SIZE` bytes that no compression shrinks.
fn random_content() -> Vec<u8> {
    let mut content = Vec::with_capacity(SIZE);
    std::fs::File::open("/dev/urandom")
        .and_then(|random| random.take(SIZE as u64).read_to_end(&mut content))
        .expect("read /dev/urandom");
    content
}

/// A `kB` field of `/proc/PID/status`, in MiB; `None` once the process is gone.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Waits for `running` to exit, reading its peak RSS (VmHWM) as it goes; returns the last
/// value read. VmHWM only grows, so a process that held the file would show it long before
/// it exits.
fn peak_rss_mib(running: &mut RunningProcess) -> f64 {
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut peak = 0.0;
    while !running.has_exited() && Instant::now() < deadline {
        if let Some(hwm) = status_mib(running.pid(), "VmHWM") {
            peak = hwm;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn a_100_mib_file_streams_with_bounded_memory() {
    let deployment = Deployment::start(1, 1);
    let content = random_content();
    let local = deployment.local("big.bin", &content);
    let target = deployment.remote("big.bin");
    let agent = deployment.agents.agent("a01").pid();
    let mut running = deployment.spawn(
        "push",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            local.into_os_string(),
            target.clone().into_os_string(),
        ],
    );
    let volley_peak = peak_rss_mib(&mut running);
    let output = running.finish(RUN_DEADLINE);
    output.assert_code(0);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        record(&output, &records, &host, "succeeded");
        let arrived = deployment.files(&host).read(&target).expect("the file");
        assert!(arrived == content, "{host}: the file differs");
    }
    let agent_peak = status_mib(agent, "VmHWM").expect("the agent runs");
    eprintln!(
        "peak RSS while pushing 100 MiB: volley {volley_peak:.1} MiB, agent {agent_peak:.1} MiB"
    );
    // Both stay far below the file's 100 MiB: it passes through in 64 KiB chunks.
    assert!(
        volley_peak > 0.0 && volley_peak < 60.0,
        "volley's peak RSS: {volley_peak:.1} MiB"
    );
    assert!(
        agent_peak < 40.0,
        "the agent's peak RSS: {agent_peak:.1} MiB"
    );
}

/// Waits until `dir` on the host holds a temporary file of `name` with some bytes in it, while
/// volley runs; its size.
fn partial_upload(
    running: &mut RunningProcess,
    files: &volley_tests::isolation::HostFiles,
    dir: &Path,
    name: &str,
) -> u64 {
    let prefix = format!(".{name}.volley-");
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        let temporary = files
            .names(dir)
            .into_iter()
            .find(|entry| entry.starts_with(&prefix));
        let size = temporary
            .and_then(|entry| std::fs::metadata(files.path(&dir.join(entry))).ok())
            .map_or(0, |metadata| metadata.len());
        if size > 0 {
            return size;
        }
        assert!(
            !running.has_exited() && Instant::now() < deadline,
            "no upload was seen under way before volley ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Over SSH, then through an agent: volley is SIGKILLed while the file streams; the host
/// keeps the old file and removes the temporary one.
#[test]
fn kill_9_of_volley_mid_push_leaves_no_partial_file() {
    let deployment = Deployment::start(1, 1);
    let content = random_content();
    let local = deployment.local("big.bin", &content);
    let target = deployment.remote("big.bin");
    let dir = deployment.remote("");
    for host in deployment.hosts() {
        deployment.files(&host).write(&target, "old");
        let mut running = deployment.spawn(
            "push",
            [
                "-w".into(),
                host.clone().into(),
                local.clone().into_os_string(),
                target.clone().into_os_string(),
            ],
        );
        let files = deployment.files(&host);
        let seen = partial_upload(&mut running, &files, &dir, "big.bin");
        running.kill_hard();
        assert!(
            seen < SIZE as u64,
            "{host}: the upload was complete ({seen} bytes) before volley was killed"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while files.names(&dir) != ["big.bin"] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            files.names(&dir),
            ["big.bin"],
            "{host}: a temporary file stayed"
        );
        assert_eq!(text(&files, &target).as_deref(), Some("old"), "{host}");
    }
}
