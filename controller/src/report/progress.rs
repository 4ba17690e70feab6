//! The progress bar on stderr: hosts done out of all, and how many are running and failed.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "[{elapsed_precise}] {wide_bar} {msg}";

/// A progress bar that counts hosts as their events arrive. Dropping it clears it from the
/// terminal, so that no half-drawn bar is left above the summary even when a report ends early.
pub(crate) struct Progress {
    bar: ProgressBar,
    /// Which hosts have started and not finished. A host cancelled before its turn finishes
    /// without starting, and must not lower the count.
    running: Vec<bool>,
    running_count: usize,
    failed: usize,
}

impl Progress {
    /// A bar on stderr, drawn only when stderr is a terminal.
    pub(crate) fn new(hosts: usize) -> Progress {
        let progress = Progress::with_target(hosts, ProgressDrawTarget::stderr());
        // Ticking keeps the elapsed time moving while no host finishes.
        progress.bar.enable_steady_tick(Duration::from_millis(200));
        progress
    }

    fn with_target(hosts: usize, target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(hosts as u64), target);
        // The template is a constant; should indicatif ever reject it, a plain bar will do.
        let style =
            ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let progress = Progress {
            bar,
            running: vec![false; hosts],
            running_count: 0,
            failed: 0,
        };
        progress.update_message();
        progress
    }

    pub(crate) fn started(&mut self, host: usize) {
        if let Some(running) = self.running.get_mut(host)
            && !*running
        {
            *running = true;
            self.running_count += 1;
        }
        self.update_message();
    }

    pub(crate) fn finished(&mut self, host: usize, success: bool) {
        if let Some(running) = self.running.get_mut(host)
            && *running
        {
            *running = false;
            self.running_count -= 1;
        }
        if !success {
            self.failed += 1;
        }
        self.bar.inc(1);
        self.update_message();
    }

    /// Runs `write` with the bar hidden, so that terminal output never tears through it.
    pub(crate) fn suspend<R>(&self, write: impl FnOnce() -> R) -> R {
        self.bar.suspend(write)
    }

    fn update_message(&self) {
        let done = self.bar.position();
        let total = self.bar.length().unwrap_or(0);
        self.bar.set_message(format!(
            "{done}/{total} done, {} running, {} failed",
            self.running_count, self.failed
        ));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_events() {
        let mut progress = Progress::with_target(4, ProgressDrawTarget::hidden());
        assert_eq!(progress.bar.message(), "0/4 done, 0 running, 0 failed");
        progress.started(0);
        progress.started(1);
        progress.started(1);
        assert_eq!(progress.bar.message(), "0/4 done, 2 running, 0 failed");
        progress.finished(0, true);
        progress.finished(1, false);
        // Cancelled before it started.
        progress.finished(2, false);
        // Out of range: counted, never a panic.
        progress.finished(9, true);
        assert_eq!(progress.bar.message(), "4/4 done, 0 running, 2 failed");
    }
}
