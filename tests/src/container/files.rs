//! What a container gets from the test before it boots: its `/etc/systemd/system` (masks, the
//! test's sshd unit), the sshd config and keys, the script that makes its users, and a machine id.
//!
//! With `--volatile=yes` the container's `/` is an empty tmpfs with this machine's `/usr` mounted
//! read-only, so `/etc`, `/var`, `/root` and `/run` start empty: systemd makes the bare minimum
//! (root in `/etc/passwd`, from sysusers). The rest comes in by bind mounts (see
//! [`super::Container::start`]) and by [`PREPARE`], which runs before sshd.

use std::net::SocketAddrV4;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use crate::loopback::random_u64;
use crate::sshd::{SshdConfig, config_text};

/// The non-root user every container has, with passwordless sudo (`--become`).
pub const OPERATOR: &str = "volley-ops";

/// Where the container sees its test files (sshd config, keys, [`PREPARE`]), read-only.
pub const TEST_DIR: &str = "/volley-test";

/// The test's sshd, as a unit: the prepare script runs first (users, sudo, /etc/hosts), then
/// sshd in the foreground with the test's config. Enabled by the link in multi-user.target.wants.
pub const SSHD_UNIT_NAME: &str = "volley-test-sshd.service";

/// Units that must not start here: the container shares this machine's network namespace, so
/// the distribution's sshd would take `*:22` (from the host and every other container), and a
/// network manager or time daemon would reach beyond loopback or change the host's interfaces.
/// `machine-id-commit` would fail on the read-only machine id. Nothing enables them (the
/// machine id given below means no first-boot preset); the masks make sure of it.
pub const MASKED: &[&str] = &[
    "ssh.service",
    "ssh.socket",
    "sshd.service",
    "networking.service",
    "NetworkManager.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "systemd-machine-id-commit.service",
];

/// Runs as root inside the container before its sshd, every boot:
/// - sshd's privilege-separation user, which the openssh-server package makes on a real host;
/// - root and [`OPERATOR`] unlocked (sshd without PAM refuses locked accounts; `*` is no
///   password at all, so only keys get in);
/// - sudo's configuration: Debian's defaults, and [`OPERATOR`] allowed without a password;
/// - `/etc/hosts` naming the container, so sudo can resolve its own host name.
const PREPARE: &str = r#"set -eu
id sshd >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
id "$OPERATOR" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$OPERATOR"
usermod -p '*' root
usermod -p '*' "$OPERATOR"
mkdir -p /etc/sudoers.d
cat > /etc/sudoers <<EOF
Defaults env_reset
Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
root ALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
EOF
echo "$OPERATOR ALL=(ALL:ALL) NOPASSWD: ALL" > "/etc/sudoers.d/$OPERATOR"
chmod 0440 /etc/sudoers "/etc/sudoers.d/$OPERATOR"
printf '127.0.0.1 localhost\n%s %s\n' "$ADDRESS" "$(hostname)" > /etc/hosts
"#;

/// Writes the container's files under `dir`: `system/` (its `/etc/systemd/system`), `test/`
/// (its [`TEST_DIR`]: `sshd_config`, `prepare.sh`; the caller puts the keys there), `usr-local/`
/// (its `/usr/local`, where the agent binary goes) and `machine-id`.
pub fn write(dir: &Path, sshd: SocketAddrV4) {
    let system = dir.join("system");
    let wants = system.join("multi-user.target.wants");
    let test = dir.join("test");
    for path in [&wants, &test, &dir.join("usr-local")] {
        std::fs::create_dir_all(path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    }
    for unit in MASKED {
        link("/dev/null", &system.join(unit));
    }
    put(&system.join(SSHD_UNIT_NAME), &sshd_unit(sshd));
    link(&format!("../{SSHD_UNIT_NAME}"), &wants.join(SSHD_UNIT_NAME));
    put(&test.join("sshd_config"), &sshd_config(sshd));
    put(&test.join("prepare.sh"), PREPARE);
    // A machine id of its own: systemd then does not take the boot for a first one, so it
    // enables no unit by preset.
    put(
        &dir.join("machine-id"),
        &format!("{:016x}{:016x}\n", random_u64(), random_u64()),
    );
}

fn sshd_unit(sshd: SocketAddrV4) -> String {
    format!(
        "[Unit]\n\
         Description=sshd of a Volley test host\n\
         [Service]\n\
         Environment=OPERATOR={OPERATOR} ADDRESS={address}\n\
         ExecStartPre=/bin/sh {TEST_DIR}/prepare.sh\n\
         ExecStart=/usr/sbin/sshd -D -e -f {TEST_DIR}/sshd_config\n\
         RuntimeDirectory=sshd\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        address = sshd.ip()
    )
}

/// The config of the fleets' sshd, with the paths the container sees, and each user's own HOME.
fn sshd_config(sshd: SocketAddrV4) -> String {
    let test = Path::new(TEST_DIR);
    config_text(&SshdConfig {
        listen: &[sshd],
        host_key: &test.join("host_ed25519"),
        authorized_keys: &test.join("authorized_keys"),
        session_home: None,
        refuse_keys_on: &[],
        extra: "",
    })
}

fn put(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn link(target: &str, path: &Path) {
    symlink(target, path).unwrap_or_else(|e| panic!("cannot link {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_gets_masks_an_enabled_sshd_and_a_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "127.60.1.2:40022".parse().unwrap());
        let system = dir.path().join("system");
        for unit in MASKED {
            assert_eq!(
                std::fs::read_link(system.join(unit)).unwrap(),
                Path::new("/dev/null")
            );
        }
        let wanted =
            std::fs::read_link(system.join("multi-user.target.wants").join(SSHD_UNIT_NAME));
        assert_eq!(wanted.unwrap(), Path::new("../volley-test-sshd.service"));
        let unit = std::fs::read_to_string(system.join(SSHD_UNIT_NAME)).unwrap();
        assert!(unit.contains("\nEnvironment=OPERATOR=volley-ops ADDRESS=127.60.1.2\n"));
        let config = std::fs::read_to_string(dir.path().join("test/sshd_config")).unwrap();
        assert!(
            config.contains("\nListenAddress 127.60.1.2:40022\n"),
            "{config}"
        );
        let id = std::fs::read_to_string(dir.path().join("machine-id")).unwrap();
        assert_eq!(id.trim().len(), 32);
        assert!(id.trim().chars().all(|c| c.is_ascii_hexdigit()));
        // The script is valid sh.
        let syntax = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", PREPARE])
            .status()
            .unwrap();
        assert!(syntax.success());
    }
}
