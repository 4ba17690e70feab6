//! The local directories volley writes the hosts' files into (`--out-dir`, `volley fetch`'s
//! DIR): made, and written to once, before any host depends on them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Makes the directory (and its parents) if it is missing, 0700, before the run starts, and
/// checks that a file can be made in it.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // Creating a file is the one way to know it can be written to before hosts depend on it.
    let probe = dir.join(".volley-write-test");
    private_file(&probe)?;
    std::fs::remove_file(probe)
}

/// Creates (or empties) a file in such a directory, readable by the operator only.
pub fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Why [`prepare`] failed, in words: a file or a link where a directory should be is "not a
/// directory", whichever of the two errors the system gave.
pub fn unusable(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
            "not a directory (a file or a link is in its place, or in place of a directory above it)"
                .to_string()
        }
        _ => crate::plan::io_reason(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_made_is_refused_before_the_run() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("plain");
        std::fs::write(&file, "").unwrap();
        for dir in [file.clone(), file.join("sub")] {
            let error = prepare(&dir).unwrap_err();
            assert!(unusable(&error).starts_with("not a directory"), "{error}");
        }
        let made = root.path().join("a/b");
        prepare(&made).unwrap();
        assert_eq!(
            std::fs::read_dir(&made).unwrap().count(),
            0,
            "the probe is gone"
        );
    }
}
