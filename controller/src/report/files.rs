//! `--out-dir DIR`: each host's output in files of its own, as `pssh -o` keeps them:
//! `DIR/HOST.stdout` and `DIR/HOST.stderr`, whole (never capped), and at the end the lists
//! `DIR/succeeded` and `DIR/failed`, one host a line, in the run's order.
//!
//! When the run starts, the files an earlier run left for its hosts and the lists are removed;
//! a host's files are created when its turn comes. So a host that printed nothing has its two
//! empty files, one that never started (skipped, or interrupted before its turn) has none, and
//! no file of an earlier run is mistaken for this one's. They are open only
//! while the host runs: descriptors stay bounded by `parallel`. Everything is private to the operator: the directory is made 0700 and the files 0600.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::event::Stream;
use crate::local_dir::private_file;

/// The files of the hosts that are running.
pub(crate) struct OutDir {
    dir: PathBuf,
    names: Vec<String>,
    open: HashMap<usize, [File; 2]>,
}

/// The lists a run writes when it ends.
const LISTS: [&str; 2] = ["succeeded", "failed"];

impl OutDir {
    /// Removes the lists of an earlier run, and the files it left for these hosts: a run that
    /// never gets to its end (`kill -9`) leaves no lists that would be taken for its own, and a
    /// host that never gets its turn no output of another run.
    pub(crate) fn new(dir: PathBuf, hosts: &[String]) -> OutDir {
        let names: Vec<String> = hosts.iter().map(|host| file_name(host)).collect();
        let earlier = names
            .iter()
            .flat_map(|name| [format!("{name}.stdout"), format!("{name}.stderr")]);
        for file in LISTS.map(str::to_string).into_iter().chain(earlier) {
            // One that cannot be removed cannot be written either: the host's turn says so.
            let _ = std::fs::remove_file(dir.join(file));
        }
        OutDir {
            dir,
            names,
            open: HashMap::new(),
        }
    }

    /// The host's turn came: its two files are created, empty.
    pub(crate) fn started(&mut self, host: usize) -> io::Result<()> {
        let Some(name) = self.names.get(host) else {
            return Ok(());
        };
        let files = [
            self.create(&format!("{name}.stdout"))?,
            self.create(&format!("{name}.stderr"))?,
        ];
        self.open.insert(host, files);
        Ok(())
    }

    pub(crate) fn output(&mut self, host: usize, stream: Stream, data: &[u8]) -> io::Result<()> {
        if !self.open.contains_key(&host) {
            // Output before the start is not expected; open the files rather than lose it.
            self.started(host)?;
        }
        let Some(files) = self.open.get_mut(&host) else {
            return Ok(());
        };
        let (file, suffix) = match stream {
            Stream::Stdout => (&mut files[0], "stdout"),
            Stream::Stderr => (&mut files[1], "stderr"),
        };
        file.write_all(data).map_err(|error| {
            let name = self.names.get(host).map_or("?", String::as_str);
            named(&self.dir.join(format!("{name}.{suffix}")), error)
        })
    }

    /// The host is done: its files are closed.
    pub(crate) fn finished(&mut self, host: usize) {
        self.open.remove(&host);
    }

    /// Writes `succeeded` and `failed` (every host that did not succeed, those without an
    /// outcome included) of `hosts`, each a name with whether it succeeded, each list replaced
    /// whole.
    pub(crate) fn write_lists(&mut self, hosts: &[(String, bool)]) -> io::Result<()> {
        self.open.clear();
        let mut succeeded = String::new();
        let mut failed = String::new();
        for (host, success) in hosts {
            let list = if *success {
                &mut succeeded
            } else {
                &mut failed
            };
            list.push_str(host);
            list.push('\n');
        }
        for (name, text) in LISTS.into_iter().zip([succeeded, failed]) {
            self.create(name)?
                .write_all(text.as_bytes())
                .map_err(|error| named(&self.dir.join(name), error))?;
        }
        Ok(())
    }

    fn create(&self, name: &str) -> io::Result<File> {
        let path = self.dir.join(name);
        private_file(&path).map_err(|error| named(&path, error))
    }
}

/// The hosts of a whole run, each with whether it succeeded: those this resume collected or
/// this retry ran (the `None`s of `run`) take theirs from `ran`, by name.
pub(crate) fn with_whole_run(
    run: Vec<(String, Option<bool>)>,
    ran: &HashMap<String, bool>,
) -> Vec<(String, bool)> {
    run.into_iter()
        .map(|(host, success)| {
            let success = success.or_else(|| ran.get(&host).copied());
            (host, success.unwrap_or(false))
        })
        .collect()
}

/// A host's file name: its name as targeted, with `/` (possible only in a user name) written
/// `%2F` and so `%` written `%25`: two hosts never share a file (`a/b@h` and `a_b@h` did, when
/// `/` became `_`).
fn file_name(host: &str) -> String {
    host.replace('%', "%25").replace('/', "%2F")
}

/// The error with the file it is about, for the one line volley prints.
fn named(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::local_dir::prepare;

    #[test]
    fn each_host_gets_its_files_and_the_lists_follow_the_outcomes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out/run1");
        prepare(&dir).unwrap();
        let hosts: Vec<String> = ["h1", "deploy@h2:22", "a/b@h3"].map(String::from).to_vec();
        std::fs::write(dir.join("succeeded"), "h1\nh2\n").unwrap();
        std::fs::write(dir.join("a%2Fb@h3.stdout"), "an earlier run's\n").unwrap();
        std::fs::write(dir.join("other.stdout"), "not a host of this run\n").unwrap();
        let mut files = OutDir::new(dir.clone(), &hosts);
        assert!(!dir.join("succeeded").exists(), "an earlier run's list");
        assert!(
            dir.join("other.stdout").exists(),
            "a file of no host of the run"
        );
        files.started(0).unwrap();
        files.started(1).unwrap();
        files.output(0, Stream::Stdout, b"one\n").unwrap();
        files.output(0, Stream::Stderr, b"warn").unwrap();
        files.output(0, Stream::Stdout, b"two\n").unwrap();
        files.finished(0);
        files.finished(1);
        let lists = [("h1", true), ("deploy@h2:22", false), ("a/b@h3", false)];
        files
            .write_lists(&lists.map(|(host, success)| (host.to_string(), success)))
            .unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("h1.stdout"), "one\ntwo\n");
        assert_eq!(read("h1.stderr"), "warn");
        assert_eq!(read("deploy@h2:22.stdout"), "");
        assert!(!dir.join("a%2Fb@h3.stdout").exists(), "never started");
        assert_eq!(read("succeeded"), "h1\n");
        assert_eq!(read("failed"), "deploy@h2:22\na/b@h3\n");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("h1.stdout")), 0o600);
    }

    #[test]
    fn hosts_whose_names_differ_only_where_a_file_name_cannot_keep_them_get_files_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        let hosts = ["a/b@h", "a_b@h", "a%2Fb@h", "a%b@h"].map(String::from);
        let mut files = OutDir::new(root.path().to_path_buf(), &hosts);
        for (host, name) in hosts.iter().enumerate() {
            files.started(host).unwrap();
            files.output(host, Stream::Stdout, name.as_bytes()).unwrap();
            files.finished(host);
        }
        let mut written: Vec<(String, String)> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "stdout")
            })
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        written.sort();
        let expected = [
            ("a%252Fb@h.stdout", "a%2Fb@h"),
            ("a%25b@h.stdout", "a%b@h"),
            ("a%2Fb@h.stdout", "a/b@h"),
            ("a_b@h.stdout", "a_b@h"),
        ];
        assert_eq!(
            written,
            expected.map(|(file, text)| (file.to_string(), text.to_string()))
        );
    }

    #[test]
    fn a_resume_lists_every_host_of_its_run() {
        let run = [
            ("h1", Some(true)),
            ("h2", None),
            ("h3", Some(false)),
            ("h4", None),
        ];
        let run = run
            .map(|(host, success)| (host.to_string(), success))
            .to_vec();
        let ran = [("h4".to_string(), false), ("h2".to_string(), true)].into();
        let lists = with_whole_run(run, &ran);
        let expected = [("h1", true), ("h2", true), ("h3", false), ("h4", false)];
        assert_eq!(lists, expected.map(|(host, s)| (host.to_string(), s)));
    }
}
