//! The directories of an agent's layout: made as a package would make them, and removed by
//! uninstall only where they are the layout's own.

use std::os::unix::fs::PermissionsExt;

use volley_tests::SshFleet;

use crate::installation::Installation;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn missing_directories_are_made_0755_but_the_config_directory_stays_private() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    for dir in [
        "usr",
        "usr/local",
        "usr/local/bin",
        "etc",
        "run",
        "var",
        "var/log",
    ] {
        assert_eq!(mode(&installation.file(&host, dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&installation.file(&host, "etc/volley")), 0o700);
}

#[test]
fn uninstall_removes_the_layouts_directories_and_no_others() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    let others = ["srv/www/uploads", "var/lib/app", "usr/local/share"];
    for dir in others {
        std::fs::create_dir_all(installation.file(&host, dir)).unwrap();
    }
    installation
        .agent("uninstall", &["-w", &host])
        .assert_code(0);
    for dir in others {
        assert!(installation.file(&host, dir).is_dir(), "{dir} was removed");
    }
    for dir in ["etc", "run", "var/log", "usr/local/bin"] {
        assert!(!installation.file(&host, dir).exists(), "{dir} is left");
    }
}
