//! `push_roots`: the directories under which `Stat`, `Push` and `Fetch` may touch files.
//!
//! A path is checked after it is normalised: it must be absolute, made of plain names (no `..`,
//! no `.`), and the deepest directory of it that exists is resolved with every symbolic link
//! followed; the result, with the names still to be created after it, must lie under one of the
//! roots (themselves resolved). So a link inside a root that points outside it does not let a
//! write out, and `/etc/../root/x` is refused before anything is opened.
//!
//! A user who may write inside a root (a `/srv/app` of theirs) can swap a directory of a
//! checked path for a link afterwards: the files are then reached from directories opened one
//! name at a time without following links ([`crate::files`]), so such a swap fails the push or
//! fetch rather than sending it outside the roots.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The roots when the configuration names none.
pub const DEFAULT_ROOTS: &[&str] = &["/etc", "/srv", "/opt", "/usr/local"];

/// Why a path may not be touched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("{path}: not an absolute path")]
    NotAbsolute { path: String },
    #[error("{path}: only plain names may follow the root, not '.' or '..'")]
    NotNormal { path: String },
    #[error("{path}: names no file")]
    NoFileName { path: String },
    #[error("{path} is outside the agent's push_roots ({roots})")]
    Outside { path: String, roots: String },
    #[error("{path} is one of the agent's push_roots, a directory: files go under it")]
    IsRoot { path: String },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} is the agent's private key, which never leaves its host and only `volley agent` replaces"
    )]
    Protected { path: String },
}

/// The configured roots, absolute and normal (checked when the configuration is read), and
/// the files under them that pushes and fetches never touch (the agent's private key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRoots {
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
}

/// A path that passed the check: where it really is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The deepest existing directory of the path, every link resolved.
    pub existing: PathBuf,
    /// Directory names below `existing` that do not exist yet, outermost first.
    pub missing: Vec<OsString>,
    /// The last name of the path.
    pub file_name: OsString,
}

impl Resolved {
    /// The file's directory as it is (or will be) on disk.
    pub fn directory(&self) -> PathBuf {
        let mut directory = self.existing.clone();
        directory.extend(&self.missing);
        directory
    }

    /// The file's path with its directories resolved; a link at the last name is not followed.
    pub fn path(&self) -> PathBuf {
        self.directory().join(&self.file_name)
    }
}

impl PushRoots {
    /// Roots from the configuration; each must be absolute and normal.
    pub fn new(roots: Vec<PathBuf>) -> Result<PushRoots, String> {
        for root in &roots {
            if !root.is_absolute() || !is_normal(root) {
                return Err(format!(
                    "push_roots: '{}' is not an absolute path of plain names",
                    root.display()
                ));
            }
        }
        Ok(PushRoots {
            roots,
            protected: Vec::new(),
        })
    }

    pub fn defaults() -> PushRoots {
        PushRoots {
            roots: DEFAULT_ROOTS.iter().map(PathBuf::from).collect(),
            protected: Vec::new(),
        }
    }

    /// These files are never written or read, whatever the roots say.
    pub fn protecting(mut self, files: Vec<PathBuf>) -> PushRoots {
        self.protected = files;
        self
    }

    /// Refuses `target` (a resolved path) if it is a protected file under any name: the same
    /// path once links are followed, or the same file (a hard link to it).
    pub fn check_not_protected(&self, path: &str, target: &Path) -> Result<(), Refusal> {
        let canonical = target
            .canonicalize()
            .unwrap_or_else(|_| target.to_path_buf());
        let same_path = self
            .protected
            .iter()
            .any(|file| file.canonicalize().is_ok_and(|file| file == canonical));
        let same_file = std::fs::metadata(target).is_ok_and(|file| self.is_protected(&file));
        if same_path || same_file {
            return Err(Refusal::Protected {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// Whether `file` (the metadata of a file, as opened) is a protected file: checked on what
    /// was opened too, so that a name swapped for a link after its check lets nothing out.
    pub fn is_protected(&self, file: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.protected.iter().any(|protected| {
            std::fs::metadata(protected).is_ok_and(|protected| {
                (protected.dev(), protected.ino()) == (file.dev(), file.ino())
            })
        })
    }

    pub fn list(&self) -> String {
        if self.roots.is_empty() {
            return "none: pushes and fetches are disabled".to_string();
        }
        self.roots
            .iter()
            .map(|root| root.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks `path` and says where it really is. Blocking: it reads the file system.
    pub fn resolve(&self, path: &str) -> Result<Resolved, Refusal> {
        let given = Path::new(path);
        if !given.is_absolute() {
            return Err(Refusal::NotAbsolute {
                path: path.to_string(),
            });
        }
        if !is_normal(given) || path.ends_with("/.") {
            return Err(Refusal::NotNormal {
                path: path.to_string(),
            });
        }
        let file_name = given
            .file_name()
            .filter(|_| !path.ends_with('/'))
            .ok_or_else(|| Refusal::NoFileName {
                path: path.to_string(),
            })?
            .to_os_string();
        let parent = given.parent().unwrap_or(Path::new("/"));
        // The deepest ancestor that exists; the names after it are still to be created.
        let mut existing = parent;
        let mut missing = Vec::new();
        let resolved = loop {
            match existing.canonicalize() {
                Ok(resolved) => break resolved,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    let Some(name) = existing.file_name() else {
                        return Err(unreadable(path, &error));
                    };
                    missing.push(name.to_os_string());
                    existing = existing.parent().unwrap_or(Path::new("/"));
                }
                Err(error) => return Err(unreadable(path, &error)),
            }
        };
        missing.reverse();
        let inside = self.roots.iter().any(|root| match root.canonicalize() {
            Ok(root) => resolved.starts_with(&root),
            // A root that does not exist on this host holds nothing.
            Err(_) => false,
        });
        if !inside {
            let resolved_root = |root: &PathBuf| {
                root.canonicalize()
                    .is_ok_and(|root| resolved.join(&file_name) == root)
            };
            if self.roots.iter().any(resolved_root) {
                return Err(Refusal::IsRoot {
                    path: path.to_string(),
                });
            }
            return Err(Refusal::Outside {
                path: path.to_string(),
                roots: self.list(),
            });
        }
        Ok(Resolved {
            existing: resolved,
            missing,
            file_name,
        })
    }

    /// Checks `path` and follows it to the file it names (links included), which must lie
    /// under a root: what a fetch reads.
    pub fn resolve_target(&self, path: &str) -> Result<PathBuf, Refusal> {
        let resolved = self.resolve(path)?;
        let target = resolved
            .path()
            .canonicalize()
            .map_err(|error| unreadable(path, &error))?;
        let inside = self.roots.iter().any(|root| {
            root.canonicalize()
                .is_ok_and(|root| target.starts_with(root))
        });
        if !inside {
            return Err(Refusal::Outside {
                path: format!("{path} (a link to {})", target.display()),
                roots: self.list(),
            });
        }
        self.check_not_protected(path, &target)?;
        Ok(target)
    }
}

fn is_normal(path: &Path) -> bool {
    path.components()
        .all(|component| matches!(component, Component::RootDir | Component::Normal(_)))
        && !path.to_string_lossy().contains("/./")
}

fn unreadable(path: &str, error: &io::Error) -> Refusal {
    Refusal::Unreadable {
        path: path.to_string(),
        reason: crate::files::io_reason(error),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Tree {
        dir: tempfile::TempDir,
        roots: PushRoots,
    }

    /// `root/` (the only root), `root/sub/`, `outside/`, and links `root/out -> outside`,
    /// `root/in -> root/sub`.
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink(dir.path().join("outside"), root.join("out")).unwrap();
        symlink(root.join("sub"), root.join("in")).unwrap();
        let roots = PushRoots::new(vec![root]).unwrap();
        Tree { dir, roots }
    }

    impl Tree {
        fn path(&self, relative: &str) -> String {
            format!("{}/{relative}", self.dir.path().display())
        }
    }

    #[test]
    fn paths_under_the_root_resolve_with_the_names_still_missing() {
        let tree = tree();
        let resolved = tree.roots.resolve(&tree.path("root/sub/a/b/f")).unwrap();
        assert_eq!(resolved.existing, tree.dir.path().join("root/sub"));
        assert_eq!(resolved.missing, vec![OsString::from("a"), "b".into()]);
        assert_eq!(resolved.path(), tree.dir.path().join("root/sub/a/b/f"));
        let through_link = tree.roots.resolve(&tree.path("root/in/f")).unwrap();
        assert_eq!(through_link.path(), tree.dir.path().join("root/sub/f"));
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let tree = tree();
        let outside = |relative: &str| {
            matches!(
                tree.roots.resolve(&tree.path(relative)),
                Err(Refusal::Outside { .. })
            )
        };
        assert!(outside("outside/f"));
        assert!(outside("root/out/f"), "a link inside the root leads out");
        assert!(outside("root/out/new/f"));
        assert!(
            outside("rootless/f"),
            "a sibling whose name starts the same"
        );
        let check = |path: &str, expected: fn(&Refusal) -> bool| {
            let refusal = tree.roots.resolve(path).unwrap_err();
            assert!(expected(&refusal), "{path}: {refusal:?}");
        };
        check(&tree.path("root/../outside/f"), |r| {
            matches!(r, Refusal::NotNormal { .. })
        });
        check(&tree.path("root/./f"), |r| {
            matches!(r, Refusal::NotNormal { .. })
        });
        check("relative/f", |r| matches!(r, Refusal::NotAbsolute { .. }));
        check(&tree.path("root/sub/"), |r| {
            matches!(r, Refusal::NoFileName { .. })
        });
        // The root itself is no file in it, and is named so.
        check(&tree.path("root"), |r| matches!(r, Refusal::IsRoot { .. }));
        assert_eq!(
            tree.roots
                .resolve(&tree.path("root"))
                .unwrap_err()
                .to_string(),
            format!(
                "{} is one of the agent's push_roots, a directory: files go under it",
                tree.path("root")
            )
        );
    }

    #[test]
    fn fetch_targets_follow_links_and_stay_under_the_root() {
        let tree = tree();
        std::fs::write(tree.dir.path().join("outside/secret"), "x").unwrap();
        std::fs::write(tree.dir.path().join("root/sub/f"), "x").unwrap();
        symlink(
            tree.dir.path().join("outside/secret"),
            tree.dir.path().join("root/secret"),
        )
        .unwrap();
        assert_eq!(
            tree.roots.resolve_target(&tree.path("root/in/f")).unwrap(),
            tree.dir.path().join("root/sub/f")
        );
        assert!(matches!(
            tree.roots.resolve_target(&tree.path("root/secret")),
            Err(Refusal::Outside { .. })
        ));
    }

    #[test]
    fn protected_files_are_refused_even_through_a_link() {
        let tree = tree();
        let key = tree.dir.path().join("root/sub/agent.key");
        std::fs::write(&key, "secret").unwrap();
        symlink(&key, tree.dir.path().join("root/key-link")).unwrap();
        let roots = tree.roots.clone().protecting(vec![key.clone()]);
        assert!(matches!(
            roots.resolve_target(&tree.path("root/key-link")),
            Err(Refusal::Protected { .. })
        ));
        let resolved = roots.resolve(&tree.path("root/in/agent.key")).unwrap();
        assert!(matches!(
            roots.check_not_protected("x", &resolved.path()),
            Err(Refusal::Protected { .. })
        ));
        // A hard link is the key under another name.
        std::fs::hard_link(&key, tree.dir.path().join("root/hard")).unwrap();
        assert!(matches!(
            roots.resolve_target(&tree.path("root/hard")),
            Err(Refusal::Protected { .. })
        ));
        let copy = tree.dir.path().join("root/copy");
        std::fs::copy(&key, &copy).unwrap();
        assert!(roots.resolve_target(&tree.path("root/copy")).is_ok());
        assert!(!roots.is_protected(&std::fs::metadata(&copy).unwrap()));
    }

    #[test]
    fn roots_must_be_absolute_and_plain() {
        assert!(PushRoots::new(vec!["etc".into()]).is_err());
        assert!(PushRoots::new(vec!["/etc/../root".into()]).is_err());
        assert!(PushRoots::new(vec!["/etc".into(), "/srv".into()]).is_ok());
        let none = PushRoots::new(Vec::new()).unwrap();
        assert!(matches!(
            none.resolve("/etc/x"),
            Err(Refusal::Outside { .. })
        ));
    }
}
