//! `volley-demo`: a throwaway local fleet of real sshd hosts on loopback, and volley run on it.
//!
//! It starts N hosts (default 20) with fresh keys, known_hosts and an inventory in a temporary
//! directory, runs a command on all of them (first streaming, then gathered), and removes
//! everything when it ends. `tests/demo.sh` builds and runs it.

use std::process::ExitCode;

use std::process::Command;

use volley_tests::SshFleet;

fn main() -> ExitCode {
    let hosts = match std::env::args().nth(1).map(|n| n.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            eprintln!("usage: volley-demo [HOSTS]   (1 to 1000, default 20)");
            return ExitCode::from(64);
        }
    };
    eprintln!("volley-demo: starting {hosts} local hosts (real sshd on loopback addresses)...");
    // volley is built next to this binary (tests/demo.sh builds both).
    let volley = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("volley"),
        Err(e) => {
            eprintln!("volley-demo: cannot find its own path: {e}");
            return ExitCode::from(70);
        }
    };
    if !volley.is_file() {
        eprintln!(
            "volley-demo: {} is missing: build it with cargo build -p volley",
            volley.display()
        );
        return ExitCode::from(70);
    }
    let fleet = SshFleet::start(hosts);
    let run = |extra: &[&str]| {
        let mut command = Command::new(&volley);
        command
            .env("HOME", fleet.client_home())
            // The demo's runs are recorded in its throwaway HOME, not in the real state dir.
            .env_remove("XDG_STATE_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .arg("run")
            .arg("--inventory")
            .arg(fleet.inventory())
            .arg("--known-hosts")
            .arg(fleet.known_hosts())
            .arg("-i")
            .arg(fleet.client_key().path())
            .args(["-l", fleet.user(), "--color", "auto"])
            .args(extra);
        eprintln!("\n$ volley run -g all {}", extra[2..].join(" "));
        command
            .status()
            .map(|status| status.code().unwrap_or(1))
            .unwrap_or_else(|e| {
                eprintln!("volley-demo: cannot run volley: {e}");
                70
            })
    };
    let streamed = run(&[
        "-g",
        "all",
        "--",
        "echo \"hello from $(hostname), sshd at ${SSH_CONNECTION#* * }\"",
    ]);
    let gathered = run(&["-g", "all", "--gather", "--", "uname -sr"]);
    eprintln!("\nvolley-demo: done; the fleet and its files are removed");
    ExitCode::from(u8::try_from(streamed.max(gathered)).unwrap_or(1))
}
