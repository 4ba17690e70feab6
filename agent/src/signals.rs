//! Signal names as the protocol spells them: without `SIG` (`TERM`, `KILL`), as in `kill -l`.
//!
//! The numbers come from rustix's constants, so the table is right on every Linux architecture
//! (their numbering differs on a few, such as MIPS).

use rustix::process::Signal;

const NAMES: &[(Signal, &str)] = &[
    (Signal::HUP, "HUP"),
    (Signal::INT, "INT"),
    (Signal::QUIT, "QUIT"),
    (Signal::ILL, "ILL"),
    (Signal::TRAP, "TRAP"),
    (Signal::ABORT, "ABRT"),
    (Signal::BUS, "BUS"),
    (Signal::FPE, "FPE"),
    (Signal::KILL, "KILL"),
    (Signal::USR1, "USR1"),
    (Signal::SEGV, "SEGV"),
    (Signal::USR2, "USR2"),
    (Signal::PIPE, "PIPE"),
    (Signal::ALARM, "ALRM"),
    (Signal::TERM, "TERM"),
    (Signal::CHILD, "CHLD"),
    (Signal::CONT, "CONT"),
    (Signal::STOP, "STOP"),
    (Signal::TSTP, "TSTP"),
    (Signal::TTIN, "TTIN"),
    (Signal::TTOU, "TTOU"),
    (Signal::URG, "URG"),
    (Signal::XCPU, "XCPU"),
    (Signal::XFSZ, "XFSZ"),
    (Signal::VTALARM, "VTALRM"),
    (Signal::PROF, "PROF"),
    (Signal::WINCH, "WINCH"),
    (Signal::IO, "IO"),
    (Signal::POWER, "PWR"),
    (Signal::SYS, "SYS"),
];

/// The name of signal `number`; a signal without one (real-time signals) is its number.
pub fn signal_name(number: i32) -> String {
    NAMES
        .iter()
        .find(|(signal, _)| signal.as_raw() == number)
        .map_or_else(|| number.to_string(), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::signal_name;

    #[test]
    fn names() {
        for (number, name) in [
            (9, "KILL"),
            (15, "TERM"),
            (2, "INT"),
            (13, "PIPE"),
            (6, "ABRT"),
        ] {
            assert_eq!(signal_name(number), name, "signal {number}");
        }
        assert_eq!(signal_name(40), "40");
    }
}
