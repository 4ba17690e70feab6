//! ANSI colouring of host names and outcomes for the reporters.
//!
//! Whether to colour is decided once by the caller (from `--color` and whether the output is a
//! terminal); everything here only obeys that decision, so rendering stays a pure function of
//! its inputs and tests can check exact bytes either way.

use std::fmt::Display;

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";

/// Host name colours, picked by host number so that a host keeps its colour for the whole run.
/// Red is left out so that a host name never reads as a failure; bright cyan makes up the six.
const HOST_COLOURS: [u8; 6] = [36, 32, 33, 35, 34, 96];

/// Colours text when enabled and passes it through unchanged otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paint {
    pub(crate) enabled: bool,
}

impl Paint {
    /// A host name in bold and the colour of its host number.
    pub(crate) fn host(self, name: &str, index: usize) -> String {
        if self.enabled {
            let colour = HOST_COLOURS[index % HOST_COLOURS.len()];
            format!("\x1b[1;{colour}m{name}{RESET}")
        } else {
            name.to_owned()
        }
    }

    pub(crate) fn failure(self, text: impl Display) -> String {
        self.wrap(RED, text)
    }

    pub(crate) fn success(self, text: impl Display) -> String {
        self.wrap(GREEN, text)
    }

    fn wrap(self, colour: &str, text: impl Display) -> String {
        if self.enabled {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_colours_cycle_and_plain_text_is_untouched() {
        let on = Paint { enabled: true };
        assert_eq!(on.host("h01", 0), "\x1b[1;36mh01\x1b[0m");
        assert_eq!(on.host("h07", 6), "\x1b[1;36mh07\x1b[0m");
        assert_eq!(on.host("h02", 1), "\x1b[1;32mh02\x1b[0m");
        assert_eq!(on.failure("x"), "\x1b[31mx\x1b[0m");
        let off = Paint { enabled: false };
        assert_eq!(off.host("h01", 0), "h01");
        assert_eq!(off.failure("x"), "x");
        assert_eq!(off.success(3), "3");
    }
}
