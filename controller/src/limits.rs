//! The open-file budget: raise the soft RLIMIT_NOFILE to the hard limit at start, and keep
//! `parallel` within what the descriptors allow, so a large run degrades to a slower run instead
//! of failing hosts with "too many open files".

/// Descriptors kept aside for stdio, the runtime, known_hosts and identity files, the agent.
const RESERVED: u64 = 64;
/// Descriptors one running host may hold: its socket, plus headroom for name resolution.
const PER_HOST: u64 = 2;
/// With `--out-dir`, a running host also holds its two output files.
const PER_HOST_FILES: u64 = 2;

/// Raises the soft limit as far as allowed and returns the number of hosts that may run at once.
/// The limit is what it is when it cannot be raised; the budget below then says so. `files`: each
/// host also keeps its output files open (`--out-dir`).
pub fn host_budget(files: bool) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024)
    });
    let per_host = if files {
        PER_HOST + PER_HOST_FILES
    } else {
        PER_HOST
    };
    budget(limit, per_host)
}

fn budget(limit: u64, per_host: u64) -> usize {
    usize::try_from((limit.saturating_sub(RESERVED) / per_host).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_and_never_reaches_zero() {
        assert_eq!(budget(1024, PER_HOST), 480);
        assert_eq!(budget(10, PER_HOST), 1);
        assert_eq!(budget(1_048_576, PER_HOST), 524_256);
        assert_eq!(budget(1024, PER_HOST + PER_HOST_FILES), 240);
    }
}
