//! `volley fetch`: every host's copy comes back into DIR/HOST/PATH.

use std::os::unix::fs::PermissionsExt;

use crate::deployment::{Deployment, record};

#[test]
fn files_come_back_into_dir_host_path_over_both_transports() {
    let deployment = Deployment::start(2, 2);
    let conf = deployment.remote("etc/app.conf");
    let version = deployment.remote("VERSION");
    for host in deployment.hosts() {
        let files = deployment.files(&host);
        files.write(&conf, format!("on {host}\n"));
        files.write(&version, "1.2\n");
    }
    let out = deployment.ssh.dir().join("fetched");
    let output = deployment.volley(
        "fetch",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            conf.clone().into_os_string(),
            version.clone().into_os_string(),
            out.clone().into_os_string(),
        ],
    );
    output.assert_code(0);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        let record = record(&output, &records, &host, "succeeded");
        let local = |path: &std::path::Path| {
            out.join(&host)
                .join(path.strip_prefix("/").expect("absolute"))
        };
        let copy = local(&conf);
        assert_eq!(
            std::fs::read_to_string(&copy).unwrap(),
            format!("on {host}\n")
        );
        assert_eq!(std::fs::read_to_string(local(&version)).unwrap(), "1.2\n");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{host}");
        assert!(
            record.stdout.starts_with(&format!(
                "fetched: {} (7 bytes), {} (4 bytes) into",
                conf.display(),
                version.display()
            )),
            "{host}: {record:?}"
        );
        assert_eq!(record.changed, None, "fetch changes nothing on the hosts");
        let names: Vec<String> = std::fs::read_dir(copy.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app.conf"], "{host}: nothing else beside the copy");
    }

    // A link is fetched as the file it names, as `scp` and `cat` read it.
    let link = deployment.remote("etc/current");
    for host in deployment.hosts() {
        std::os::unix::fs::symlink(&version, deployment.files(&host).path(&link))
            .expect("a link on the host");
    }
    let linked = deployment.ssh.dir().join("linked");
    let output = deployment.volley(
        "fetch",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            link.clone().into_os_string(),
            linked.clone().into_os_string(),
        ],
    );
    output.assert_code(0);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        record(&output, &records, &host, "succeeded");
        let copy = linked
            .join(&host)
            .join(link.strip_prefix("/").expect("absolute"));
        let kind = std::fs::symlink_metadata(&copy).unwrap().file_type();
        assert!(kind.is_file(), "{host}: {kind:?}");
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "1.2\n", "{host}");
    }

    // A file that one host lacks fails that host only, before any of its local copies is
    // replaced (VERSION, asked for first, is there).
    std::fs::remove_file(deployment.files("h02").path(&conf)).unwrap();
    std::fs::remove_file(deployment.files("a02").path(&conf)).unwrap();
    let local_version = |host: &str| {
        out.join(host)
            .join(version.strip_prefix("/").expect("absolute"))
    };
    for host in ["h02", "a02"] {
        std::fs::write(local_version(host), "kept\n").unwrap();
    }
    let output = deployment.volley(
        "fetch",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            version.clone().into_os_string(),
            conf.clone().into_os_string(),
            out.clone().into_os_string(),
        ],
    );
    output.assert_code(1);
    let records = output.records_by_host();
    for host in ["h02", "a02"] {
        let record = record(&output, &records, host, "step_failed");
        assert_eq!(
            record.reason.as_deref(),
            Some(format!("fetch failed: {}: no such file", conf.display()).as_str())
        );
        let kept = std::fs::read_to_string(local_version(host)).unwrap();
        assert_eq!(kept, "kept\n", "{host}");
    }
    for host in ["h01", "a01"] {
        record(&output, &records, host, "succeeded");
    }
}

/// A log being written is fetched as it stood when the host was asked, over both transports: a
/// prefix of the file whole, not a failure because it grew while it was read.
#[test]
fn a_file_that_grows_while_it_is_fetched_comes_back_as_it_stood() {
    let deployment = Deployment::start(1, 1);
    let log = deployment.remote("var/log/app.log");
    let line = "x".repeat(99) + "\n";
    let paths: Vec<std::path::PathBuf> = deployment
        .hosts()
        .iter()
        .map(|host| {
            let files = deployment.files(host);
            files.write(&log, line.repeat(200_000));
            files.path(&log)
        })
        .collect();
    // Appends until the fetch is done, for 60 s at most.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (done, line) = (done.clone(), line.clone());
        move || {
            let mut files: Vec<std::fs::File> = paths
                .iter()
                .map(|path| std::fs::File::options().append(true).open(path).unwrap())
                .collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                for file in &mut files {
                    std::io::Write::write_all(file, line.as_bytes()).unwrap();
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    });
    let out = deployment.ssh.dir().join("logs");
    let output = deployment.volley(
        "fetch",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            log.clone().into_os_string(),
            out.clone().into_os_string(),
        ],
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    output.assert_code(0);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        record(&output, &records, &host, "succeeded");
        let copy = out
            .join(&host)
            .join(log.strip_prefix("/").expect("absolute"));
        let fetched = std::fs::read(&copy).unwrap();
        assert!(fetched.len() >= 200_000 * line.len(), "{host}");
        // As it stood: the first bytes of the file as it is now, which only grew.
        let now = deployment.files(&host).read(&log).expect("the host's log");
        assert!(
            now.starts_with(&fetched),
            "{host}: not a prefix of the file"
        );
    }
}
