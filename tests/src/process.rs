//! Child processes that the fixture waits for with a deadline and kills on drop.
//!
//! Both pipes are drained by threads from the start, so a child that writes megabytes never
//! blocks on a full pipe while the test waits for it. What stdout carried so far can be read
//! while the child runs, for tests that act on progress.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tools;

/// How often a wait looks at the child again. Polling is bounded by the caller's deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Bytes of each stream shown in a failure message: enough to see the error, not a 10 MiB dump.
const SHOWN_BYTES: usize = 4096;

/// What a finished process left behind.
#[derive(Debug)]
pub struct ProcessOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ProcessOutput {
    /// The exit code, or `None` if the process died by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Status and the ends of both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            shorten(&self.stdout),
            shorten(&self.stderr)
        )
    }

    /// Panics with the whole story unless the process exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            Some(code),
            "unexpected exit status\n{}",
            self.describe()
        );
    }
}

/// A running child with stdin closed (or given) and both output streams captured.
#[derive(Debug)]
pub struct RunningProcess {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Everything stdout carried so far, as the draining thread reads it.
    stdout_so_far: Arc<Mutex<Vec<u8>>>,
}

impl RunningProcess {
    pub fn spawn(command: &mut Command) -> RunningProcess {
        RunningProcess::spawn_with_stdin(command, Stdio::null())
    }

    /// [`RunningProcess::spawn`] with `stdin` as the child's stdin (a file, say).
    pub fn spawn_with_stdin(command: &mut Command, stdin: impl Into<Stdio>) -> RunningProcess {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout_so_far = Arc::new(Mutex::new(Vec::new()));
        let stdout = child
            .stdout
            .take()
            .map(|pipe| drain(pipe, Some(stdout_so_far.clone())));
        let stderr = child.stderr.take().map(|pipe| drain(pipe, None));
        RunningProcess {
            child,
            stdout,
            stderr,
            stdout_so_far,
        }
    }

    /// What the child wrote to stdout so far (whole lines and maybe a partial one).
    pub fn stdout_so_far(&self) -> String {
        let bytes = self
            .stdout_so_far
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until `ready` holds for the stdout so far, for at most `within`; fails the test
    /// with everything the child printed otherwise, or if it exits first.
    pub fn wait_for_stdout(&mut self, within: Duration, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        while !ready(&self.stdout_so_far()) {
            if self.has_exited() || Instant::now() >= deadline {
                let status = self.child.wait().ok();
                let stdout = self.stdout_so_far();
                panic!("stdout never got ready within {within:?} (exit: {status:?}):\n{stdout}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGKILL: the child gets no chance to clean up or write anything more.
    pub fn kill_hard(&mut self) -> ProcessOutput {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("cannot reap child {}: {e}", self.pid()));
        self.collect(status)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGINT, as a terminal's Ctrl-C would.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends the signal `name` (`INT`, `TERM`, `HUP`). The `kill` program keeps this crate free
    /// of unsafe code.
    pub fn signal(&self, name: &str) {
        tools::run_tool(
            Command::new(tools::kill())
                .args(["-s", name])
                .arg(self.pid().to_string()),
        );
    }

    /// Waits until the process exits. Past `within` it is killed and the test fails with
    /// whatever it printed so far.
    pub fn finish(&mut self, within: Duration) -> ProcessOutput {
        let deadline = Instant::now() + within;
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(e) => panic!("cannot wait for child {}: {e}", self.pid()),
            }
        };
        let status = match exited {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let status = self.child.wait().expect("a killed child can be reaped");
                let output = self.collect(status);
                panic!(
                    "process did not finish within {within:?}; killed it\n{}",
                    output.describe()
                );
            }
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> ProcessOutput {
        let text = |handle: Option<JoinHandle<Vec<u8>>>| {
            let bytes = handle
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        ProcessOutput {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` to its end on a thread, copying each chunk into `so_far` as it comes.
fn drain(
    mut stream: impl Read + Send + 'static,
    so_far: Option<Arc<Mutex<Vec<u8>>>>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => {
                    bytes.extend_from_slice(&chunk[..read]);
                    if let Some(so_far) = &so_far {
                        so_far
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .extend_from_slice(&chunk[..read]);
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        bytes
    })
}

/// `text`, with its middle left out if it is too long to read in a failure message.
pub fn shorten(text: &str) -> String {
    if text.len() <= 2 * SHOWN_BYTES {
        return text.to_string();
    }
    let head_end = floor_char_boundary(text, SHOWN_BYTES);
    let tail_start = floor_char_boundary(text, text.len() - SHOWN_BYTES);
    format!(
        "{}\n[... {} bytes left out ...]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn output_of_a_chatty_child_is_complete() {
        let mut child = RunningProcess::spawn(
            Command::new("sh").args(["-c", "seq 1 200000; echo done >&2; exit 7"]),
        );
        let output = child.finish(Duration::from_secs(30));
        output.assert_code(7);
        assert_eq!(output.stdout.lines().count(), 200_000);
        assert_eq!(output.stderr, "done\n");
    }

    #[test]
    fn interrupt_delivers_sigint() {
        let mut child = RunningProcess::spawn(Command::new("sh").args([
            "-c",
            "trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.05; done",
        ]));
        child.interrupt();
        let output = child.finish(Duration::from_secs(30));
        // The trap may or may not be installed when the signal lands; either way SIGINT ended it.
        assert!(
            output.code() == Some(130) || output.status.signal() == Some(2),
            "{}",
            output.describe()
        );
    }

    #[test]
    fn stdout_can_be_watched_while_the_child_runs_and_then_killed() {
        let mut child =
            RunningProcess::spawn(Command::new("sh").args(["-c", "echo first; exec sleep 600"]));
        child.wait_for_stdout(Duration::from_secs(30), |out| out.contains("first\n"));
        let output = child.kill_hard();
        assert_eq!(output.status.signal(), Some(9));
        assert_eq!(output.stdout, "first\n");
    }

    #[test]
    fn long_output_is_shortened_in_messages() {
        let long = "x".repeat(3 * SHOWN_BYTES);
        let short = shorten(&long);
        assert!(short.len() < long.len());
        assert!(short.contains("bytes left out"));
    }
}
