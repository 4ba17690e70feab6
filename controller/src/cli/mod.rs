//! The command line as clap parses it: raw flags, before any validation.
//!
//! Turning these into a validated [`crate::plan::RunPlan`] is the job of `plan`; nothing here
//! reads files or touches the network. `volley push` and `volley fetch` are in [`transfer`].

mod transfer;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod examples;

pub use self::transfer::{FetchArgs, PushArgs, TransferArgs};

#[derive(Debug, Parser)]
#[command(
    name = "volley",
    version,
    about = "Run one command on many servers at once",
    after_help = examples::VOLLEY
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line as clap does, then checks what clap cannot
    /// ([`transfer::check`]).
    pub fn parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(argv)?;
        transfer::check(&cli.command)?;
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command on every target host and report one outcome per host
    #[command(after_help = examples::RUN)]
    Run(Box<RunArgs>),
    /// Manage the private CA that agents and the controller trust
    #[command(subcommand, after_help = examples::PKI)]
    Pki(PkiCommand),
    /// Start a throwaway local fleet of agents, run a command on it, and clean up
    #[command(after_help = examples::DEMO)]
    Demo(DemoArgs),
    /// List recent runs, or show one run's outcomes (`runs show last`)
    #[command(after_help = examples::RUNS)]
    Runs(RunsArgs),
    /// Run a recorded run's command again, with the same flags, on the hosts that did not
    /// succeed
    #[command(after_help = examples::RETRY, mut_args(as_recorded))]
    Retry(Box<RetryArgs>),
    /// Install, check, upgrade, renew or remove volley-agent on hosts, over SSH
    #[command(subcommand, after_help = examples::AGENT)]
    Agent(AgentCommand),
    /// Copy files and directories to every target host, atomically and verified there; with
    /// --then, run a command where something changed
    #[command(
        after_help = examples::PUSH,
        override_usage = "volley push [OPTIONS] <LOCAL>... <REMOTE>"
    )]
    Push(Box<PushArgs>),
    /// Bring files back from every target host into DIR/HOST/PATH
    #[command(
        after_help = examples::FETCH,
        override_usage = "volley fetch [OPTIONS] <REMOTE>... <DIR>"
    )]
    Fetch(Box<FetchArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = examples::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print volley's man page, generated from these flags, or write one page per subcommand
    #[command(after_help = examples::MAN)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write volley.1 and a page for each subcommand (volley-run.1, volley-agent-install.1, ...)
    /// into this directory instead of printing volley.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Install the agent (binary, key made on the host, certificate, config, service), then
    /// verify it answers over mTLS; hosts already up to date report "unchanged"
    #[command(after_help = examples::AGENT_INSTALL)]
    Install(Box<AgentInstallArgs>),
    /// Per host: the agent's version, whether it answers, its certificate's expiry
    #[command(after_help = examples::AGENT_STATUS)]
    Status(Box<AgentArgs>),
    /// Replace the agent binary: atomic swap, restart, verify; the old one is put back if the
    /// new one does not come up
    #[command(after_help = examples::AGENT_UPGRADE)]
    Upgrade(Box<AgentInstallArgs>),
    /// Give agents a new key (made on the host) and certificate, served without a restart
    #[command(after_help = examples::AGENT_RENEW)]
    Renew(Box<AgentArgs>),
    /// Stop and disable the agent and remove everything the install put on the host
    #[command(after_help = examples::AGENT_UNINSTALL)]
    Uninstall(Box<AgentArgs>),
}

#[derive(Debug, Args)]
pub struct AgentInstallArgs {
    #[command(flatten)]
    pub common: AgentArgs,

    /// The volley-agent binary to put on the hosts [default: the volley-agent next to this
    /// volley]
    #[arg(long, value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,
}

/// The settings of an agent operation: those of `volley run` that apply to it.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub ssh: SshArgs,

    #[command(flatten)]
    pub pki: PkiDir,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA and the controller's client certificate
    #[command(after_help = examples::PKI_INIT)]
    Init {
        #[command(flatten)]
        dir: PkiDir,
        /// The controller's identity (its certificate's Common Name), which agents must allow
        #[arg(long, value_name = "NAME", default_value = crate::pki::DEFAULT_IDENTITY)]
        identity: String,
    },
    /// Issue agent certificates: NAME, or NAME=ADDRESS to add the host's address
    #[command(after_help = examples::PKI_ISSUE)]
    Issue {
        #[command(flatten)]
        dir: PkiDir,
        #[arg(required = true, value_name = "NAME[=ADDRESS]")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PkiDir {
    /// The PKI directory [default: ~/.config/volley/pki]
    #[arg(long = "pki", value_name = "DIR", env = "VOLLEY_PKI")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many agents to start, each on its own loopback address
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        allow_negative_numbers = true
    )]
    pub hosts: usize,

    /// The command to run on them
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetArgs,

    #[command(flatten)]
    pub ssh: SshArgs,

    /// Which transport runs the hosts: `auto` uses the agent where one answers and SSH where
    /// none can be reached [default: auto, or the inventory's `transport`]
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    pub transport: Option<TransportFlag>,

    #[command(flatten)]
    pub pki: PkiDir,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Output kept in memory per host and stream, for --gather and --json (the terminal stream
    /// is never capped) [default: 1MiB]
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub max_output: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub rollout: RolloutArgs,

    /// Send these bytes (a file, or `-` for volley's own stdin) to the command's stdin on every
    /// host, then end of file [default: no input]
    #[arg(long, value_name = "FILE|-")]
    pub stdin: Option<PathBuf>,

    /// The command, run by the remote user's shell
    #[arg(
        last = true,
        required_unless_present = "list_hosts",
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// How many hosts at once, and how long each may take: the same flags for `volley run` and every
/// `volley agent` operation.
#[derive(Debug, Default, Args)]
pub struct LimitArgs {
    /// How many hosts run at once [default: 512, or the inventory's `parallel`]
    #[arg(short = 'p', long, value_name = "N", allow_negative_numbers = true)]
    pub parallel: Option<usize>,

    /// Time allowed to connect and authenticate to one host, counted from its handshake's
    /// admission [default: 10s]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub connect_timeout: Option<String>,

    /// How many hosts may be connecting (TCP, handshake, authentication) at once: a number, or
    /// `auto` to grow while handshakes stay fast and shrink when they slow down [default: auto]
    #[arg(long, value_name = "N|auto", allow_negative_numbers = true)]
    pub max_handshakes: Option<String>,

    /// Time allowed on one host once connected; a command is then stopped there [default: none
    /// for `volley run`, 10m for `volley agent` operations, `push` and `fetch`]
    #[arg(short = 't', long, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Target hosts: comma-separated patterns such as `web[01-20].example.com`,
    /// `deploy@db1:2222`, `@group`
    #[arg(short = 'w', long = "targets", value_name = "PATTERNS")]
    pub targets: Vec<String>,

    /// Inventory groups to target (comma-separated or repeated)
    #[arg(
        short = 'g',
        long = "group",
        value_name = "GROUP",
        value_delimiter = ','
    )]
    pub groups: Vec<String>,

    /// Hosts to leave out: patterns, ranges, `@group` or globs such as `db*`
    #[arg(short = 'x', long = "exclude", value_name = "PATTERNS")]
    pub exclude: Vec<String>,

    /// Read targets from a file (`-`: volley's stdin), one pattern per line; `#` starts a
    /// comment
    #[arg(long, value_name = "FILE|-")]
    pub hosts_file: Vec<PathBuf>,

    /// The inventory file [default: ~/.config/volley/inventory.toml]
    #[arg(long, value_name = "FILE", env = "VOLLEY_INVENTORY")]
    pub inventory: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Remote user [default: ssh config, inventory, then the local user]
    #[arg(short = 'l', long, value_name = "USER")]
    pub user: Option<String>,

    /// Identity file to authenticate with (repeatable) [default: ~/.ssh/id_ed25519, id_ecdsa,
    /// id_rsa]
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// known_hosts file that host keys are checked against [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Record the keys of hosts not yet in known_hosts (changed keys are still refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// OpenSSH client config (Host, Match, Include, HostName, User, Port, IdentityFile,
    /// ProxyJump; what Volley cannot honour is refused) [default: ~/.ssh/config; `none` reads
    /// nothing]
    #[arg(short = 'F', long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// Reach the hosts through these jump hosts, in order: `[user@]host[:port],...` (ssh -J);
    /// `none` ignores ProxyJump from the ssh config
    #[arg(short = 'J', long = "jump", value_name = "HOPS")]
    pub jump: Option<String>,

    /// An ssh config option for every host, as `ssh -o` takes it (repeatable): HostName, User,
    /// Port, IdentityFile or ProxyJump
    #[arg(short = 'o', long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,

    /// Become root on the hosts through `sudo -n` (never prompts): the command, or every step
    /// of an agent operation, runs as root [default: the inventory's `become`]
    #[arg(long = "become")]
    pub become_root: bool,
}

#[derive(Debug, Default, Args)]
pub struct OutputArgs {
    /// Write one JSON object per host outcome (JSON Lines) to stdout instead of the output stream
    #[arg(long, conflicts_with = "gather")]
    pub json: bool,

    /// Print each distinct output once, under the folded list of hosts that produced it
    #[arg(short = 'b', long)]
    pub gather: bool,

    /// Stream output lines without the `HOST: ` prefix (failure lines still name their host)
    #[arg(short = 'N', long)]
    pub no_prefix: bool,

    /// Also write each host's whole output to DIR/HOST.stdout and DIR/HOST.stderr, and the
    /// hosts that succeeded and failed to DIR/succeeded and DIR/failed (made if missing, 0700)
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Print the hosts the targets resolve to (user, address, port, transport) and run nothing
    #[arg(long)]
    pub list_hosts: bool,

    /// Colour host names and outcomes: `auto` colours each of stdout and stderr only when it is
    /// a terminal and NO_COLOR is not set [default: auto]
    #[arg(long, value_enum, value_name = "WHEN")]
    pub color: Option<ColorChoice>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportFlag {
    Auto,
    Agent,
    Ssh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Default, Args)]
pub struct RolloutArgs {
    /// Run the hosts in batches, each after the previous one finished: a number of hosts (25),
    /// a percentage of the targets (10%), or a list whose last size repeats (1,10%,50%)
    #[arg(
        long,
        value_name = "SIZES",
        help_heading = "Rollout",
        allow_negative_numbers = true
    )]
    pub batch: Option<String>,

    /// Time to wait between the end of a batch and the start of the next [default: 0s]
    #[arg(
        long,
        value_name = "DURATION",
        help_heading = "Rollout",
        allow_hyphen_values = true
    )]
    pub batch_delay: Option<String>,

    /// Stop the rollout once more hosts than this failed, counted over the whole run (a
    /// number, or a percentage of the targets, rounded down); hosts not yet started are
    /// skipped
    #[arg(
        long,
        value_name = "N|N%",
        help_heading = "Rollout",
        allow_negative_numbers = true
    )]
    pub max_failures: Option<String>,

    /// Stop the rollout at the first failure (a failure budget of 0)
    #[arg(long, conflicts_with = "max_failures", help_heading = "Rollout")]
    pub abort_on_failure: bool,

    /// Retry a host this many times when it could not be connected to (refused, no route,
    /// connect timeout), with backoff; a command that may have started is never retried
    /// [default: 0]
    #[arg(
        long,
        value_name = "N",
        help_heading = "Rollout",
        allow_negative_numbers = true
    )]
    pub retries: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub show: Option<RunsCommand>,

    /// How many of the most recent runs to list
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value_t = 20,
        allow_negative_numbers = true
    )]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show the outcome of every host of a run
    #[command(after_help = examples::RUNS_SHOW)]
    Show(ShowArgs),
    /// Collect the outcomes of a run's commands that were sent to agents and not seen to end
    /// (volley was killed, or lost its connections): running ones are followed to their end,
    /// finished ones collected; nothing runs again
    #[command(after_help = examples::RUNS_RESUME)]
    Resume(ResumeArgs),
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// A run id, or `last` for the most recent run
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Write JSON Lines instead of the run's own output mode
    #[arg(long, conflicts_with = "gather")]
    pub json: bool,

    /// Print each distinct output once (instead of the run's own output mode)
    #[arg(short = 'b', long)]
    pub gather: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A run id, or `last` for the most recent run
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Print only the hosts that did not succeed, folded into ranges (`web[03,07-09]`)
    #[arg(long)]
    pub failed: bool,

    /// Print only host names, one a line (with --failed, only the hosts that did not succeed)
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// A run id, or `last` for the most recent run
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Retry only the hosts whose outcome is of these kinds (comma-separated): an outcome such
    /// as `unreachable` or `non_zero_exit`, `not_finished`, or a class: `failed` (the command
    /// ran and failed), `unreached` (not reached, refused or timed out), `interrupted`
    /// (cancelled or not finished)
    #[arg(long, value_name = "CLASSES")]
    pub only: Option<String>,

    #[command(flatten)]
    pub overrides: RetryOverrides,
}

/// A retry's flags share their help with `volley run`'s, but one not given keeps what the run
/// had, not `run`'s default: their `[default: ...]` says so.
fn as_recorded(arg: clap::Arg) -> clap::Arg {
    let recorded = |help: Option<&clap::builder::StyledStr>| {
        let help = help?.to_string();
        let (text, _) = help.split_once(" [default: ")?;
        Some(format!("{text} [default: as the run had it]"))
    };
    let long = recorded(arg.get_long_help());
    let arg = match recorded(arg.get_help()) {
        Some(help) => arg.help(help),
        None => arg,
    };
    match long {
        Some(help) => arg.long_help(help),
        None => arg,
    }
}

/// What a retry may change of the recorded run: a flag given here replaces the recorded one
/// (`--json` and `--gather` replace the output mode, `--max-failures` and `--abort-on-failure`
/// each other); the targets and the command stay as recorded.
#[derive(Debug, Default, Args)]
pub struct RetryOverrides {
    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub rollout: RolloutArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Output kept in memory per host and stream, for --gather and --json
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub max_output: Option<String>,

    /// Record the keys of hosts not yet in known_hosts (changed keys are still refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Identity files to authenticate with, instead of the recorded ones (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// known_hosts file that host keys are checked against, instead of the recorded one
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// The transport, instead of the recorded one (`ssh` where agents failed, say)
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    pub transport: Option<TransportFlag>,

    /// Become root on the hosts through `sudo -n`, as `volley run --become` does
    #[arg(long = "become")]
    pub become_root: bool,
}

#[cfg(test)]
mod tests;
