//! A PKI made with the real `volley pki init` and `volley pki issue`, as an operator makes one:
//! the tests trust exactly the files that the controller writes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::tools;
use crate::volley::volley_command_at;

/// A PKI directory: `ca.pem`, `controller.pem`/`.key`, `agents/NAME.pem`/`.key`.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
    volley: PathBuf,
    home: PathBuf,
}

impl Pki {
    /// `volley pki init --pki DIR --identity IDENTITY`, run by the volley binary at `volley`
    /// with HOME set to `home`.
    pub fn init(volley: &Path, home: &Path, dir: &Path, identity: &str) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
            volley: volley.to_path_buf(),
            home: home.to_path_buf(),
        };
        pki.volley_pki(&["init", "--identity", identity]);
        pki
    }

    /// `volley pki issue NAME[=ADDRESS]...` for every certificate at once: one process, however
    /// many agents.
    pub fn issue(&self, certificates: &[(&str, Option<Ipv4Addr>)]) {
        // `volley pki issue` wants at least one name; a fleet of no agents needs none.
        if certificates.is_empty() {
            return;
        }
        let names: Vec<String> = certificates
            .iter()
            .map(|(name, address)| match address {
                Some(address) => format!("{name}={address}"),
                None => name.to_string(),
            })
            .collect();
        let mut args = vec!["issue"];
        args.extend(names.iter().map(String::as_str));
        self.volley_pki(&args);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The agent certificate issued for `name`.
    pub fn certificate(&self, name: &str) -> PathBuf {
        self.dir.join("agents").join(format!("{name}.pem"))
    }

    /// The private key of the agent certificate issued for `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join("agents").join(format!("{name}.key"))
    }

    pub fn controller_certificate(&self) -> PathBuf {
        self.dir.join("controller.pem")
    }

    pub fn controller_key(&self) -> PathBuf {
        self.dir.join("controller.key")
    }

    fn volley_pki(&self, args: &[&str]) {
        let (subcommand, rest) = args.split_first().expect("a pki subcommand");
        tools::run_tool(
            volley_command_at(&self.volley, &self.home)
                .args(["pki", subcommand, "--pki"])
                .arg(&self.dir)
                .args(rest),
        );
    }
}
