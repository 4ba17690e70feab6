//! Documents generated from the clap definitions, so they can never disagree with the flags:
//! shell completion scripts (`volley completions SHELL`, clap_complete) and man pages
//! (`volley man`, clap_mangen).

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell`. It is generated in memory first: clap_complete
/// panics when its writer fails, and a closed pipe must not make volley panic.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "volley", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes volley(1): the synopsis, every flag, the subcommands and the examples. clap's own
/// `help` subcommand is left out of it: it would be listed as volley-help(1), a page that
/// `volley man --dir` (rightly) does not write.
pub fn man_page(out: &mut impl Write) -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command().disable_help_subcommand(true)).render(&mut page)?;
    out.write_all(&page)?;
    out.flush()
}

/// Writes volley.1 and a page per subcommand (`volley-run.1`, `volley-agent-install.1`, ...)
/// into `dir`, which is created if needed; returns the pages written, in order.
pub fn man_pages(dir: &Path) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("volley") && name.ends_with(".1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_subcommand() {
        let mut page = Vec::new();
        man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH volley"),
            "{page}"
        );
        for command in Cli::command().get_subcommands() {
            let name = command.get_name();
            assert!(page.contains(&format!("volley\\-{name}")), "no {name}");
        }
        assert!(page.contains("Examples:"));
        assert!(!page.contains("volley\\-help"), "{page}");
    }

    #[test]
    fn a_page_is_written_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        for page in [
            "volley.1",
            "volley-run.1",
            "volley-agent-install.1",
            "volley-runs-show.1",
            "volley-retry.1",
        ] {
            assert!(
                pages.iter().any(|p| p == page),
                "{page} missing from {pages:?}"
            );
        }
    }
}
