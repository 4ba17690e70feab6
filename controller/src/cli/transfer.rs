//! The flags of `volley push` and `volley fetch`: those of `volley run` that say which hosts and
//! how to reach them ([`TransferArgs`]), and their own.

use std::path::PathBuf;

use clap::Args;

use super::{LimitArgs, OutputArgs, PkiDir, RolloutArgs, SshArgs, TargetArgs, TransportFlag};

/// What a push or a fetch shares with `volley run`: targets, SSH, transport, limits, output and
/// rollout.
#[derive(Debug, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub ssh: SshArgs,

    /// Which transport reaches the hosts: `auto` uses the agent where one answers and SSH where
    /// none can be reached [default: auto, or the inventory's `transport`]
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    pub transport: Option<TransportFlag>,

    #[command(flatten)]
    pub pki: PkiDir,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub common: TransferArgs,

    /// Permission bits of the written files, in octal (0644) [default: those of the file
    /// replaced, else of the local file]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,

    /// Owner of the written files: USER, USER:GROUP or :GROUP, names or numbers [default: that
    /// of the file replaced, else the writing user]
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,

    /// Keep each replaced file beside it, as FILE.YYYYMMDDTHHMMSSZ~ (the push's start, UTC)
    #[arg(long)]
    pub backup: bool,

    /// Run this command (as `volley run` runs one) on each host where a file changed, once
    /// every file is in place; its failure is the host's failure
    #[arg(long, value_name = "COMMAND")]
    pub then: Option<String>,

    /// LOCAL... REMOTE: the local files and directories to send, then where they go: the
    /// file's path, or a directory (ending in `/`, or when several LOCALs or a directory are
    /// sent) that they go into. Options may come between them.
    #[arg(required = true, num_args = 1.., value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

impl PushArgs {
    /// The local files and directories: every path but the last.
    pub fn locals(&self) -> &[PathBuf] {
        self.paths.split_last().map_or(&[], |(_, locals)| locals)
    }

    /// REMOTE: the last path (text, as [`check`] made sure).
    pub fn remote(&self) -> String {
        self.paths
            .last()
            .map(|remote| remote.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub common: TransferArgs,

    /// REMOTE... DIR: the remote files to bring back (absolute paths), then the local
    /// directory each lands in as DIR/HOST/PATH (made if missing). Options may come between
    /// them.
    #[arg(required = true, num_args = 1.., value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

impl FetchArgs {
    /// The remote files: every path but the last (text, as [`check`] made sure).
    pub fn remotes(&self) -> Vec<String> {
        self.paths.split_last().map_or(Vec::new(), |(_, remotes)| {
            remotes
                .iter()
                .map(|remote| remote.to_string_lossy().into_owned())
                .collect()
        })
    }

    /// DIR: the last path.
    pub fn local_dir(&self) -> PathBuf {
        self.paths.last().cloned().unwrap_or_default()
    }
}

/// What clap cannot check of `volley push` and `volley fetch`, whose paths are one list so that
/// options may come between them: that the list has at least two paths, and that the remote
/// ones are text. The error is clap's, with the subcommand's usage.
pub fn check(command: &super::Command) -> Result<(), clap::Error> {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;
    let (name, paths, last, remote_is_last) = match command {
        super::Command::Push(args) => ("push", &args.paths, "<REMOTE>", true),
        super::Command::Fetch(args) => ("fetch", &args.paths, "<DIR>", false),
        _ => return Ok(()),
    };
    let error = |kind, message: String| {
        let mut cli = super::Cli::command();
        cli.build();
        match cli.find_subcommand_mut(name) {
            Some(subcommand) => subcommand.error(kind, message),
            None => cli.error(kind, message),
        }
    };
    if paths.len() < 2 {
        return Err(error(
            ErrorKind::MissingRequiredArgument,
            format!("the following required arguments were not provided:\n  {last}"),
        ));
    }
    let remotes = if remote_is_last {
        &paths[paths.len() - 1..]
    } else {
        &paths[..paths.len() - 1]
    };
    if let Some(remote) = remotes.iter().find(|remote| remote.to_str().is_none()) {
        return Err(error(
            ErrorKind::InvalidUtf8,
            format!(
                "the remote path '{}' is not UTF-8 text",
                remote.to_string_lossy()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::super::Cli::command().debug_assert();
    }
}
