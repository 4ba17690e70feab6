//! What the agent says about the machine it runs on, read once at start.

/// The host's name and operating system, as `Info` reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub hostname: String,
    /// For example "Linux 6.1.0-18-amd64 x86_64".
    pub os: String,
}

impl Host {
    /// From `uname(2)`, which cannot fail; names that are not UTF-8 are shown lossily.
    pub fn current() -> Host {
        let uname = rustix::system::uname();
        Host {
            hostname: uname.nodename().to_string_lossy().into_owned(),
            os: format!(
                "{} {} {}",
                uname.sysname().to_string_lossy(),
                uname.release().to_string_lossy(),
                uname.machine().to_string_lossy()
            ),
        }
    }
}
