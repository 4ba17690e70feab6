//! A control group of its own for each container.
//!
//! `systemd-nspawn --keep-unit` puts the container in `payload/` under the cgroup nspawn runs
//! in. Two containers started from one test process would share that `payload/`, and each
//! container's systemd would then see (and stop) the other's units. So each container's nspawn
//! is first moved into a fresh cgroup of its own, in every hierarchy systemd uses (the
//! `name=systemd` v1 hierarchy on hybrid hosts, and the v2 one), and the cgroups are removed
//! when the container has stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The container's cgroup directories, one per hierarchy systemd uses.
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Makes `NAME` under the current process's cgroup in each hierarchy systemd uses.
    pub fn create(name: &str) -> Cgroups {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_else(|e| panic!("cannot read /proc/self/cgroup: {e}"));
        let dirs: Vec<PathBuf> = hierarchies(&own)
            .into_iter()
            .map(|(mount, path)| mount.join(path.trim_start_matches('/')).join(name))
            .collect();
        assert!(
            !dirs.is_empty(),
            "no cgroup hierarchy of systemd found in /proc/self/cgroup:\n{own}"
        );
        for dir in &dirs {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
        }
        Cgroups { dirs }
    }

    /// The `cgroup.procs` files that the container's nspawn moves itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Removes the cgroups, deepest first, once the processes in them are gone (the kernel
    /// refuses to remove a cgroup with processes; a dying container empties its own within
    /// moments). Gives up after `within` and says which are left.
    pub fn remove(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let left: Vec<PathBuf> = self.dirs.iter().flat_map(|dir| remove_tree(dir)).collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("cgroups left behind: {left:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where each hierarchy that systemd uses is mounted, with this process's path in it: the v1
/// `name=systemd` hierarchy (hybrid hosts) and the v2 one (`/sys/fs/cgroup` itself on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
fn hierarchies(own: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new("/sys/fs/cgroup");
    own.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let mount = match (id, controllers) {
                (_, "name=systemd") => root.join("systemd"),
                ("0", "") if root.join("cgroup.controllers").exists() => root.to_path_buf(),
                ("0", "") => root.join("unified"),
                _ => return None,
            };
            mount.is_dir().then(|| (mount, path.to_string()))
        })
        .collect()
}

/// Removes the cgroup `dir` and those under it, deepest first; returns those still there.
fn remove_tree(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut left: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .flat_map(|entry| remove_tree(&entry.path()))
        .collect();
    if std::fs::remove_dir(dir).is_err() && dir.exists() {
        left.push(dir.to_path_buf());
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_hierarchies_are_found_in_proc_self_cgroup() {
        let hybrid = "9:name=systemd:/a/b\n4:memory:/x\n0::/a/b\n";
        let found = hierarchies(hybrid);
        let expected_v1 = (PathBuf::from("/sys/fs/cgroup/systemd"), "/a/b".to_string());
        if Path::new("/sys/fs/cgroup/systemd").is_dir() {
            assert!(found.contains(&expected_v1), "{found:?}");
        }
        assert!(!found.is_empty(), "this machine has no systemd hierarchy");
        assert!(
            found.iter().all(|(_, path)| path == "/a/b"),
            "only systemd's hierarchies: {found:?}"
        );
    }
}
