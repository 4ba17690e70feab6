//! Running a command into a real pipe whose reader goes away (`volley ... | head -1`), and on a
//! real pseudo-terminal (`script`), as an operator's shell would.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How a command piped into `head` ended.
#[derive(Debug)]
pub struct PipedRun {
    /// The command's own status (not head's).
    pub status: ExitStatus,
    /// What `head` printed.
    pub head: String,
    /// The command's stderr, when it was not sent into the pipe too.
    pub stderr: String,
}

impl PipedRun {
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- head printed ---\n{}\n--- stderr ---\n{}",
            self.status, self.head, self.stderr
        )
    }
}

/// Runs `command | head -n LINES` (with `2>&1` when `stderr_too`): the reader is a real `head`
/// that exits after its lines and closes the pipe. Fails the test if the command is not over
/// within `within` (it is killed then).
pub fn into_head(
    command: &mut Command,
    lines: usize,
    stderr_too: bool,
    within: Duration,
) -> PipedRun {
    let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("cannot make a pipe: {e}"));
    let head = Command::new("head")
        .arg("-n")
        .arg(lines.to_string())
        .stdin(reader)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start head: {e}"));
    command.stdin(Stdio::null());
    if stderr_too {
        let copy = writer
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot duplicate the pipe: {e}"));
        command.stdout(writer).stderr(copy);
    } else {
        command.stdout(writer).stderr(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    // `command` still holds its copies of the write end: let them go, so that head sees the end
    // of its input when the command exits before head has its lines.
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    let status = wait(&mut child, within);
    let head_output = head
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for head: {e}"));
    PipedRun {
        status,
        head: String::from_utf8_lossy(&head_output.stdout).into_owned(),
        stderr: stderr
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// What a command run on a pseudo-terminal left.
#[derive(Debug)]
pub struct TerminalRun {
    pub status: ExitStatus,
    /// What the terminal showed: the command's stdout (with `\r\n` line ends).
    pub terminal: String,
    /// The command's stderr, redirected to a file.
    pub stderr: String,
}

/// Runs `program ARGS` under `script`, so that its stdout is a pseudo-terminal, with its stderr
/// sent to a file instead (`2>FILE`): the case of an operator who keeps the errors of a run.
/// `env` is added to the environment.
pub fn on_terminal_with_stderr_to_file(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    env: &[(&str, &str)],
    scratch: &std::path::Path,
    within: Duration,
) -> TerminalRun {
    let quoted: Vec<String> = std::iter::once(program.as_os_str())
        .chain(args.iter().map(|arg| arg.as_os_str()))
        .map(|word| shell_quote(&word.to_string_lossy()))
        .collect();
    let stderr_file = scratch.join(format!("stderr-{}", crate::loopback::random_u64()));
    let line = format!(
        "{} 2>{}",
        quoted.join(" "),
        shell_quote(&stderr_file.to_string_lossy())
    );
    let mut command = Command::new("script");
    // -q: no banner; -e: script exits with the command's status; the typescript goes nowhere.
    command
        .args(["-q", "-e", "-c"])
        .arg(&line)
        .arg("/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start script (util-linux): {e}"));
    let mut out = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let status = wait(&mut child, within);
    let terminal = reader.join().unwrap_or_default();
    let stderr = std::fs::read(&stderr_file).unwrap_or_else(|e| {
        panic!(
            "the command's stderr file {} is missing: {e}",
            stderr_file.display()
        )
    });
    TerminalRun {
        status,
        terminal: String::from_utf8_lossy(&terminal).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn wait(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the command did not finish within {within:?}; killed it");
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => panic!("cannot wait for the command: {e}"),
        }
    }
}

/// `word` quoted for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_into_a_closed_pipe_is_killed_by_sigpipe() {
        use std::os::unix::process::ExitStatusExt;
        // `yes` keeps SIGPIPE's default action: the reader's exit kills it.
        let run = into_head(&mut Command::new("yes"), 2, false, Duration::from_secs(30));
        assert_eq!(run.head, "y\ny\n");
        assert_eq!(run.status.signal(), Some(13), "{}", run.describe());
    }

    #[test]
    fn script_gives_a_terminal_and_keeps_stderr_apart() {
        let dir = tempfile::tempdir().unwrap();
        let run = on_terminal_with_stderr_to_file(
            std::path::Path::new("/bin/sh"),
            &[
                "-c".into(),
                "test -t 1 && echo tty; test -t 2 || echo file >&2".into(),
            ],
            &[],
            dir.path(),
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{run:?}");
        assert_eq!(run.terminal.replace('\r', ""), "tty\n");
        assert_eq!(run.stderr, "file\n");
    }
}
