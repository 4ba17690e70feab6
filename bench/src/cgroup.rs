//! A CPU-limited cgroup for a fleet's sshd processes: the honest way to make every handshake of
//! a local fleet slower, as on overloaded or small servers.
//!
//! The limit is a CFS quota over a short period (10 ms), so that even a lone handshake is
//! stretched, not only a crowd of them: with a quota of a third of a CPU, a handshake that
//! needs 10 ms of CPU takes about 30 ms. Processes moved into the group take their future
//! children with them, so the per-connection sshd processes and the sessions' shells are
//! limited too. Both cgroup layouts are handled: v2 (`cpu.max` under /sys/fs/cgroup) and v1 (the
//! `cpu` controller's hierarchy). Dropping the group moves its processes back to the root group
//! and removes it.

use std::path::{Path, PathBuf};

/// The CFS period: short, so that the quota slows every handshake evenly.
const PERIOD_US: u64 = 10_000;

/// A cgroup with a CPU quota, removed on drop.
pub struct CpuLimit {
    dir: PathBuf,
    /// Where processes go back to when the group is removed.
    root: PathBuf,
}

impl CpuLimit {
    /// Creates `name` with a quota of `cpus` CPUs (0.33: a third of one), or says why it cannot.
    pub fn create(name: &str, cpus: f64) -> Result<CpuLimit, String> {
        let quota_us = ((cpus * PERIOD_US as f64) as u64).max(1000);
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
        let limit = if v1.exists() {
            let root = PathBuf::from("/sys/fs/cgroup/cpu");
            let limit = CpuLimit::make(&root, name)?;
            write(&limit.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&limit.dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            limit
        } else if v2.exists() {
            let root = PathBuf::from("/sys/fs/cgroup");
            let controllers = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                write(&root.join("cgroup.subtree_control"), "+cpu")?;
            }
            let limit = CpuLimit::make(&root, name)?;
            write(
                &limit.dir.join("cpu.max"),
                &format!("{quota_us} {PERIOD_US}"),
            )?;
            limit
        } else {
            return Err("no cgroup CPU controller under /sys/fs/cgroup".to_string());
        };
        Ok(limit)
    }

    fn make(root: &Path, name: &str) -> Result<CpuLimit, String> {
        let dir = root.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        Ok(CpuLimit {
            dir,
            root: root.to_path_buf(),
        })
    }

    /// Moves `pid` (and so its future children) into the group.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Takes every process out of the group, back to the root group.
    pub fn release(&self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = write(&self.root.join("cgroup.procs"), pid);
        }
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        self.release();
        if let Err(error) = std::fs::remove_dir(&self.dir) {
            eprintln!("cannot remove the cgroup {}: {error}", self.dir.display());
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text)
        .map_err(|e| format!("cannot write {text} to {}: {e}", path.display()))
}
