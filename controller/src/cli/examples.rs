//! The examples at the end of every subcommand's `--help` (and of its man page): a few
//! command lines an operator can adapt, each one a real use of that subcommand.

pub const VOLLEY: &str = "\
Examples:
  volley run -w 'web[01-20].example.com' -- systemctl reload nginx
  volley run -g web --batch 1,10% --max-failures 2 -- systemctl restart app
  volley runs
  volley retry last
  volley agent install -g web
  volley completions bash > /etc/bash_completion.d/volley";

pub const RUN: &str = "\
Examples:
  volley run -w 'web[01-20].example.com,db1' -- systemctl reload nginx
  volley run -g web -x web07 --timeout 30s -- df -h /
  volley run --hosts-file hosts.txt -p 1000 --json -- uptime
  volley run -g web --gather -- cat /etc/app/version
  volley run -g web --batch 1,10%,50% --batch-delay 30s --max-failures 2 -- systemctl restart app
  volley run -g web -N -- hostname
  volley run -g web --out-dir out -- journalctl -u app --since today
  volley run -g web --list-hosts
  volley run -g web --stdin app.conf -- 'cat > /etc/app/app.conf'
  printf '%s\\n' web01 web02 | volley run --hosts-file - -- uptime";

pub const PKI: &str = "\
Examples:
  volley pki init
  volley pki issue web01.example.com=10.0.0.11";

pub const PKI_INIT: &str = "\
Examples:
  volley pki init
  volley pki init --pki /srv/volley/pki --identity ops-controller";

pub const PKI_ISSUE: &str = "\
Examples:
  volley pki issue web01.example.com=10.0.0.11
  volley pki issue web01.example.com web02.example.com";

pub const DEMO: &str = "\
Examples:
  volley demo
  volley demo --hosts 200 -- 'uname -r'";

pub const RUNS: &str = "\
Examples:
  volley runs
  volley runs -n 50
  volley runs show last --failed";

pub const RUNS_SHOW: &str = "\
Examples:
  volley runs show last
  volley runs show 20261127T0658 --failed
  volley runs show last --failed --list > failed.txt";

pub const RETRY: &str = "\
Examples:
  volley retry last
  volley retry last --only unreachable,connect_timeout
  volley retry 20261127T065812Z-3f9a -p 50 --timeout 10m
  volley retry last --accept-new-host-keys
  volley retry last --list-hosts";

pub const AGENT: &str = "\
Examples:
  volley agent install -g web
  volley agent status -g web
  volley agent upgrade -g web --agent-binary ./volley-agent";

pub const AGENT_INSTALL: &str = "\
Examples:
  volley agent install -g web
  volley agent install -g web --batch 1,10% --max-failures 2
  volley agent install -w 'web[01-20]' --agent-binary ./target/release/volley-agent";

pub const AGENT_STATUS: &str = "\
Examples:
  volley agent status -g web
  volley agent status -g web --json";

pub const AGENT_UPGRADE: &str = "\
Examples:
  volley agent upgrade -g web --agent-binary ./volley-agent
  volley agent upgrade -g web --batch 1,25% --abort-on-failure";

pub const AGENT_RENEW: &str = "\
Examples:
  volley agent renew -g web
  volley agent renew -w web07";

pub const AGENT_UNINSTALL: &str = "\
Examples:
  volley agent uninstall -w web07
  volley agent uninstall -g web --batch 10";

pub const PUSH: &str = "\
Examples:
  volley push -g web nginx.conf /etc/nginx/nginx.conf --then 'systemctl reload nginx'
  volley push -g web conf.d /etc/nginx/ --mode 0644 --owner root:root --backup
  volley push -g web --batch 1,10%,50% --max-failures 2 app.env /srv/app/ --then 'systemctl restart app'
  volley push -g web -l deploy --become motd /etc/motd";

pub const FETCH: &str = "\
Examples:
  volley fetch -g web /etc/nginx/nginx.conf out/
  volley fetch -w 'db[1-3]' /etc/postgresql/16/main/postgresql.conf /etc/hosts configs/";

pub const COMPLETIONS: &str = "\
Examples:
  volley completions bash > /etc/bash_completion.d/volley
  volley completions zsh > \"${fpath[1]}/_volley\"
  volley completions fish > ~/.config/fish/completions/volley.fish";

pub const MAN: &str = "\
Examples:
  volley man | man -l -
  volley man --dir /usr/local/share/man/man1";
