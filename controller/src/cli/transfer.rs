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

    /// Local files and directories to send
    #[arg(required = true, num_args = 1.., value_name = "LOCAL")]
    pub locals: Vec<PathBuf>,

    /// Where they go: the file's path, or a directory (ending in `/`, or when several LOCALs
    /// or a directory are sent) that they go into
    #[arg(required = true, value_name = "REMOTE")]
    pub remote: String,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub common: TransferArgs,

    /// Remote files to bring back (absolute paths)
    #[arg(required = true, num_args = 1.., value_name = "REMOTE")]
    pub remotes: Vec<String>,

    /// The local directory: each file lands in DIR/HOST/PATH (made if missing)
    #[arg(required = true, value_name = "DIR")]
    pub local_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::super::Cli::command().debug_assert();
    }
}
