//! Noticing that the reader of stdout or stderr went away while volley has nothing to write.
//!
//! A write to a pipe whose reader is gone fails at once (`EPIPE`), and the reporters stop the
//! run then. But a run whose commands print a line and then work quietly
//! (`volley run -g web -- 'echo started; ./migrate' | head -1`) would write nothing more for
//! as long as they run, and keep running for a reader that is long gone. So, as `tail -f` does,
//! a thread asks the kernel whether stdout or stderr is a pipe without a reader (`poll` reports
//! `POLLERR` on such a write end; a terminal or a file never does) and stops the run when one is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use tokio_util::sync::CancellationToken;

/// How long one look waits; also how late a finished run's watcher notices that it may stop.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The watch over stdout and stderr for the length of a run.
pub struct ReaderWatch {
    /// Cancelled when a reader goes away, before the run is: the reporters stop writing first.
    gone: CancellationToken,
    done: Arc<AtomicBool>,
}

impl ReaderWatch {
    /// Starts watching; `cancel` (the run) is cancelled when a reader goes away.
    pub fn start(cancel: CancellationToken) -> ReaderWatch {
        let gone = CancellationToken::new();
        let done = Arc::new(AtomicBool::new(false));
        let (gone_token, done_flag) = (gone.clone(), done.clone());
        // A plain thread, not tokio's blocking pool: it must not hold up the runtime's shutdown.
        let started = std::thread::Builder::new()
            .name("reader-watch".to_string())
            .spawn(move || {
                while !done_flag.load(Ordering::Relaxed) {
                    if reader_gone(LOOK_EVERY) {
                        gone_token.cancel();
                        cancel.cancel();
                        return;
                    }
                }
            });
        // Without the thread, a closed pipe is still noticed at the next write.
        drop(started);
        ReaderWatch { gone, done }
    }

    /// Cancelled when a reader went away: whatever is still to be written has no one to read it.
    pub fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    /// Whether a reader went away during the run. Stops the watch.
    pub fn finish(self) -> bool {
        self.done.store(true, Ordering::Relaxed);
        self.gone.is_cancelled()
    }
}

/// Waits up to `wait` for stdout or stderr to report an error: the reader of a pipe is gone.
fn reader_gone(wait: Duration) -> bool {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    // No events asked for: poll reports only errors and hang-ups.
    let mut fds = [
        PollFd::new(&stdout, PollFlags::empty()),
        PollFd::new(&stderr, PollFlags::empty()),
    ];
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 250_000_000,
    });
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(_) => {
            // An error of poll itself (EINTR) is no news; wait a little so as not to spin.
            std::thread::sleep(Duration::from_millis(10));
            false
        }
        Ok(_) => {
            let gone = fds.iter().any(|fd| {
                let events = fd.revents();
                events.intersects(PollFlags::ERR | PollFlags::HUP)
                    && !events.contains(PollFlags::NVAL)
            });
            if !gone {
                // A closed descriptor (POLLNVAL) answers at once, every time: look less often.
                std::thread::sleep(wait);
            }
            gone
        }
    }
}
