//! Who keeps the agent running on a host: systemd where the host runs it, otherwise the
//! fallback supervisor.
//!
//! - systemd (`/run/systemd/system` exists): the unit of `deploy/` is installed, then
//!   `daemon-reload`, `enable` and `restart` (Type=notify: `restart` returns once the agent
//!   said READY, or fails if it died first); reload is `systemctl reload` (SIGHUP).
//! - Fallback (containers, minimal images, test machines): the agent is started detached, in its
//!   own session (`setsid`, or `nohup` where there is none), stdin from /dev/null and its output
//!   appended to the layout's log; the pid file names it. Stop is SIGTERM to that pid, KILL after
//!   45 s (beyond the agent's 30 s grace for running commands); reload is SIGHUP. Nothing restarts
//!   an agent that dies: the next `volley agent install` finds it stopped and starts it, and
//!   `volley agent status` reports it. The pid is trusted only while its process runs this
//!   layout's config (see `agent_pid` in [`super::remote::PRELUDE`]), and a start or reload
//!   prints it, so that the verify step takes only that process's answer (an agent started
//!   by hand, or whose pid file was lost, is not stopped and keeps the port).

use super::layout::{Layout, UNIT_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervisor {
    Systemd,
    Fallback,
}

/// Prints the last line the agent's own processes wrote to the journal (systemd's messages
/// about the unit left out).
fn journal_tail() -> String {
    format!("journalctl _SYSTEMD_UNIT={UNIT_NAME} -n 1 --no-pager -o cat 2>/dev/null")
}

/// Stops the fallback's agent, if it runs, and forgets its pid file.
const FALLBACK_STOP: &str = r#"if pid=$(agent_pid); then
  kill -TERM "$pid" 2>/dev/null || true
  i=0
  while alive "$pid" && [ "$i" -lt 450 ]; do sleep 0.1; i=$((i + 1)); done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
fi
rm -f "$PID_FILE"
"#;

/// Starts the agent detached and prints its pid once the pid file names it.
const FALLBACK_START: &str = r#"(umask 022; mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG")")
umask 077
cd /
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=nohup; fi
# The inner shell writes its own pid, then becomes the agent: the pid file names the agent
# whether or not setsid forked.
$detach /bin/sh -c 'echo $$ > "$1.tmp" && mv -f "$1.tmp" "$1" && exec "$2" --config "$3"' \
  volley-agent "$PID_FILE" "$BINARY" "$CONFIG" < /dev/null >> "$LOG" 2>&1 &
i=0
while [ ! -s "$PID_FILE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -s "$PID_FILE" ]; then echo "the agent did not start (no pid file after 10 s)" >&2; exit 1; fi
cat "$PID_FILE"
"#;

impl Supervisor {
    pub fn of_host(systemd: bool) -> Supervisor {
        if systemd {
            Supervisor::Systemd
        } else {
            Supervisor::Fallback
        }
    }

    /// How a result line names it: `... answers on ADDRESS under systemd`.
    pub fn name(self) -> &'static str {
        match self {
            Supervisor::Systemd => "systemd",
            Supervisor::Fallback => "the fallback supervisor",
        }
    }

    /// Starts the agent, stopping a running one first. Under systemd this also enables the
    /// unit; with a prefix the unit is not in systemd's search path, so it is enabled by path
    /// (which links it).
    pub fn restart(self, layout: &Layout) -> String {
        match self {
            Supervisor::Systemd => {
                let unit = if layout.prefix.is_empty() {
                    UNIT_NAME.to_string()
                } else {
                    "\"$UNIT\"".to_string()
                };
                // systemctl's own message ends with "See systemctl status": the reason says
                // instead how the start ended and what the agent said last.
                format!(
                    "systemctl daemon-reload\nsystemctl enable --quiet {unit}\n\
                     if ! systemctl restart {UNIT_NAME}; then\n  \
                     echo \"systemctl restart failed ($(systemctl show -p Result --value \
                     {UNIT_NAME})); the agent's log ends: $({log})\" >&2\n  exit 1\nfi\n",
                    log = journal_tail(),
                )
            }
            Supervisor::Fallback => format!("{FALLBACK_STOP}{FALLBACK_START}"),
        }
    }

    /// Stops the agent (systemd: and disables it, so a reboot does not bring it back).
    pub fn stop(self) -> String {
        match self {
            Supervisor::Systemd => format!(
                "systemctl disable --now --quiet {UNIT_NAME} 2>/dev/null || \
                 systemctl stop {UNIT_NAME} 2>/dev/null || true\n"
            ),
            Supervisor::Fallback => FALLBACK_STOP.to_string(),
        }
    }

    /// Asks the running agent to read its certificate, key and CA again (SIGHUP); the fallback
    /// prints the pid it signalled.
    pub fn reload(self) -> String {
        match self {
            Supervisor::Systemd => format!("systemctl reload {UNIT_NAME}\n"),
            Supervisor::Fallback => {
                r#"pid=$(agent_pid) || { echo "the agent is not running" >&2; exit 1; }
kill -HUP "$pid"
echo "$pid"
"#
                .to_string()
            }
        }
    }

    /// The pid of the agent that a [`Supervisor::restart`] or [`Supervisor::reload`] script
    /// started or signalled, from its output: the fallback prints it last; systemd keeps its own
    /// watch and says nothing.
    pub fn pid(self, output: &str) -> Option<u32> {
        match self {
            Supervisor::Systemd => None,
            Supervisor::Fallback => output.lines().last()?.trim().parse().ok(),
        }
    }

    /// Exits 0 when the agent runs.
    pub fn check_running(self) -> String {
        match self {
            Supervisor::Systemd => format!("systemctl is-active --quiet {UNIT_NAME}\n"),
            Supervisor::Fallback => "agent_pid > /dev/null\n".to_string(),
        }
    }

    /// Prints the agent's last log line, for a failure's reason.
    pub fn last_log_line(self) -> String {
        match self {
            Supervisor::Systemd => format!("{} || true\n", journal_tail()),
            Supervisor::Fallback => "tail -n 1 \"$LOG\" 2>/dev/null || true\n".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::super::remote::PRELUDE;
    use super::*;

    fn local(layout: &Layout, body: &str) -> std::process::Output {
        let script = format!("set -eu\n{}{PRELUDE}{body}", layout.shell_variables());
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("/bin/sh runs")
    }

    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|status| !status.lines().any(|l| l.starts_with("State:\tZ")))
    }

    #[test]
    fn systemd_enables_by_name_or_by_path_and_reloads_with_the_unit() {
        let plain = Supervisor::Systemd.restart(&Layout::new(None));
        assert!(
            plain.starts_with(
                "systemctl daemon-reload\nsystemctl enable --quiet volley-agent.service\n\
                 if ! systemctl restart volley-agent.service; then\n"
            ),
            "{plain}"
        );
        assert!(
            plain.contains("$(journalctl _SYSTEMD_UNIT=volley-agent.service -n 1"),
            "{plain}"
        );
        let syntax = Command::new("/bin/sh").args(["-n", "-c", &plain]).output();
        assert!(syntax.expect("/bin/sh runs").status.success(), "{plain}");
        // A prefixed unit is outside systemd's search path: enabling it by path links it.
        let prefixed = Supervisor::Systemd.restart(&Layout::new(Some(std::path::Path::new("/p"))));
        assert!(
            prefixed.contains("systemctl enable --quiet \"$UNIT\"\n"),
            "{prefixed}"
        );
        assert_eq!(
            Supervisor::Systemd.reload(),
            "systemctl reload volley-agent.service\n"
        );
        assert_eq!(Supervisor::Systemd.pid("1234\n"), None);
        assert!(
            Supervisor::Systemd
                .stop()
                .starts_with("systemctl disable --now")
        );
    }

    /// The fallback with a stand-in agent (a shell script that waits for signals): started
    /// detached with its pid recorded, seen running, reloaded with SIGHUP, restarted as a new
    /// process, stopped with nothing left.
    #[test]
    fn the_fallback_starts_reloads_restarts_and_stops_an_agent() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some(dir.path()));
        std::fs::create_dir_all(dir.path().join("usr/local/bin")).unwrap();
        std::fs::write(
            &layout.binary,
            "#!/bin/sh\ntrap 'echo hup' HUP\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n",
        )
        .unwrap();
        Command::new("chmod")
            .args(["755", &layout.binary])
            .status()
            .unwrap();
        let supervisor = Supervisor::Fallback;

        let started = local(&layout, &supervisor.restart(&layout));
        assert!(started.status.success(), "{started:?}");
        let first = String::from_utf8_lossy(&started.stdout).trim().to_string();
        assert!(alive(&first), "{first} is not running");
        assert_eq!(
            supervisor.pid(&String::from_utf8_lossy(&started.stdout)),
            first.parse().ok()
        );
        assert!(local(&layout, &supervisor.check_running()).status.success());

        let reloaded = local(&layout, &supervisor.reload());
        assert!(reloaded.status.success());
        assert_eq!(String::from_utf8_lossy(&reloaded.stdout).trim(), first);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&layout.log)
            .unwrap_or_default()
            .contains("hup")
        {
            assert!(Instant::now() < deadline, "SIGHUP never reached the agent");
            std::thread::sleep(Duration::from_millis(20));
        }

        let restarted = local(&layout, &supervisor.restart(&layout));
        let second = String::from_utf8_lossy(&restarted.stdout)
            .trim()
            .to_string();
        assert_ne!(first, second);
        assert!(!alive(&first), "the old agent survived the restart");
        assert!(alive(&second));

        assert!(local(&layout, &supervisor.stop()).status.success());
        assert!(!alive(&second), "the agent survived the stop");
        assert!(!std::path::Path::new(&layout.pid_file).exists());
        assert!(!local(&layout, &supervisor.check_running()).status.success());
    }
}
