//! Stream mode: every line of every host's output as it arrives, prefixed with the host name;
//! then, for a host that did not succeed, `host: volley: <why> (<transport>)`, the transport
//! being the one that ran it (and, after a fallback, why the agent was not used).
//!
//! Transports forward output in chunks cut anywhere, so each host's stdout and stderr are
//! reassembled into lines here; a written line never mixes two hosts. What is written is the
//! same however the stream was chunked.

use std::collections::HashMap;
use std::io::{self, Write};

use volley_common::outcome::{HostReport, Outcome};

use super::color::Paint;
use crate::event::Stream;

/// A partial line longer than this is written as a line of its own, so a host that prints
/// without newlines holds at most this much memory per stream.
pub(crate) const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// After a long line, a buffer bigger than this is freed rather than kept for the next one, so
/// thousands of hosts that each once printed a long line do not each hold 64 KiB.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Reassembles one host's stream into lines across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Feeds a chunk, handing each completed line (without its `\n` or `\r\n`) to `line`.
    pub(crate) fn push(
        &mut self,
        mut chunk: &[u8],
        mut line: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let newline = chunk.iter().position(|&byte| byte == b'\n');
            let mut piece = &chunk[..newline.unwrap_or(chunk.len())];
            // The cut falls where a byte arrives for a full buffer, exactly as if the stream had
            // come one byte at a time; this keeps the output independent of the chunking.
            while self.partial.len() + piece.len() > MAX_PARTIAL_LINE {
                let (head, rest) = piece.split_at(MAX_PARTIAL_LINE - self.partial.len());
                self.take_line(head, false, &mut line)?;
                piece = rest;
            }
            match newline {
                Some(at) => {
                    self.take_line(piece, true, &mut line)?;
                    chunk = &chunk[at + 1..];
                }
                None => {
                    self.partial.extend_from_slice(piece);
                    return Ok(());
                }
            }
        }
    }

    /// Hands over the unterminated rest of the stream, if any, as a last line.
    pub(crate) fn finish(&mut self, line: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        self.take_line(&[], false, line)
    }

    /// Completes the buffered partial line with `tail` and hands it over.
    fn take_line(
        &mut self,
        tail: &[u8],
        terminated: bool,
        mut line: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let result = if self.partial.is_empty() {
            line(strip_cr(tail, terminated))
        } else {
            self.partial.extend_from_slice(tail);
            line(strip_cr(&self.partial, terminated))
        };
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = Vec::new();
        } else {
            self.partial.clear();
        }
        result
    }
}

/// Drops the `\r` of a `\r\n` ending. A line cut for length or left unterminated keeps its bytes.
fn strip_cr(line: &[u8], terminated: bool) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) if terminated => rest,
        _ => line,
    }
}

/// How stream mode looks: the colours of each stream, and whether lines carry their host.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    pub(crate) out: Paint,
    pub(crate) err: Paint,
    /// `HOST: ` before each output line; `-N` leaves it out, as `pdsh -N` does.
    pub(crate) prefix: bool,
    /// The command is a push's `--then`: its exit or signal is named as the `--then`'s.
    pub(crate) then: bool,
}

/// Renders stream mode: output lines as they complete, and a line for each failed host.
pub(crate) struct StreamRenderer {
    hosts: Vec<String>,
    /// `HOST: ` for each host number, coloured once up front: for stdout, then for stderr.
    prefixes: [Vec<Vec<u8>>; 2],
    /// Partial lines of the hosts that have output pending: stdout, then stderr.
    lines: HashMap<usize, [LineBuffer; 2]>,
    style: Style,
}

impl StreamRenderer {
    pub(crate) fn new(hosts: Vec<String>, style: Style) -> StreamRenderer {
        let prefixes = |paint: Paint| {
            hosts
                .iter()
                .enumerate()
                .map(|(index, name)| match style.prefix {
                    true => format!("{}: ", paint.host(name, index)).into_bytes(),
                    false => Vec::new(),
                })
                .collect()
        };
        StreamRenderer {
            prefixes: [prefixes(style.out), prefixes(style.err)],
            hosts,
            lines: HashMap::new(),
            style,
        }
    }

    /// Writes the lines this chunk completes: stdout chunks to `out`, stderr chunks to `err`.
    pub(crate) fn output(
        &mut self,
        host: usize,
        stream: Stream,
        data: &[u8],
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> io::Result<()> {
        let (out_prefix, err_prefix) = self.prefixes_of(host);
        let buffers = self.lines.entry(host).or_default();
        match stream {
            Stream::Stdout => buffers[0].push(data, |line| write_line(out, &out_prefix, line)),
            Stream::Stderr => buffers[1].push(data, |line| write_line(err, &err_prefix, line)),
        }
    }

    /// Writes what is left of the host's partial lines, then its outcome if it failed.
    pub(crate) fn finished(
        &mut self,
        host: usize,
        report: &HostReport,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> io::Result<()> {
        self.flush_host(host, out, err)?;
        // Skipped hosts, and hosts an interrupt kept from starting, never ran: a line each would
        // bury the failures. The summary lists them, folded.
        if report.outcome.is_success() || report.never_started() {
            return Ok(());
        }
        // The failure line names its host even with `-N`: it is about the host, not its output.
        let name = self.hosts.get(host).unwrap_or(&report.host);
        let outcome = match &report.outcome {
            Outcome::NonZeroExit { .. } | Outcome::Signalled { .. } if self.style.then => {
                format!("--then {}", report.outcome)
            }
            outcome => outcome.to_string(),
        };
        let failure = match ran_over(report) {
            Some(transport) => format!("volley: {outcome} ({transport})"),
            None => format!("volley: {outcome}"),
        };
        let paint = self.style.err;
        let failure = paint.failure(failure);
        writeln!(err, "{}: {failure}", paint.host(name, host))
    }

    /// Writes the partial lines of hosts that never finished; the run should not leave any, but
    /// if it does their output is not lost.
    pub(crate) fn close(&mut self, out: &mut impl Write, err: &mut impl Write) -> io::Result<()> {
        let mut pending: Vec<usize> = self.lines.keys().copied().collect();
        pending.sort_unstable();
        for host in pending {
            self.flush_host(host, out, err)?;
        }
        Ok(())
    }

    fn flush_host(
        &mut self,
        host: usize,
        out: &mut impl Write,
        err: &mut impl Write,
    ) -> io::Result<()> {
        let Some([mut stdout, mut stderr]) = self.lines.remove(&host) else {
            return Ok(());
        };
        let (out_prefix, err_prefix) = self.prefixes_of(host);
        stdout.finish(|line| write_line(out, &out_prefix, line))?;
        stderr.finish(|line| write_line(err, &err_prefix, line))
    }

    /// The prefixes of a host number for stdout and stderr; a number outside the host list (a
    /// bug upstream) still gets a name.
    fn prefixes_of(&self, host: usize) -> (Vec<u8>, Vec<u8>) {
        let of = |prefixes: &[Vec<u8>]| match prefixes.get(host) {
            Some(prefix) => prefix.clone(),
            None if self.style.prefix => format!("host#{host}: ").into_bytes(),
            None => Vec::new(),
        };
        (of(&self.prefixes[0]), of(&self.prefixes[1]))
    }
}

/// The transport that ran the host, and why it was not the agent when `auto` fell back; `None`
/// for a host that never started.
pub(crate) fn ran_over(report: &HostReport) -> Option<String> {
    if report.attempts == 0 {
        return None;
    }
    Some(match &report.fallback {
        Some(fallback) => format!(
            "{}, fell back from the agent: {}",
            report.transport,
            fallback.reason.describe()
        ),
        None => report.transport.to_string(),
    })
}

fn write_line(out: &mut impl Write, prefix: &[u8], line: &[u8]) -> io::Result<()> {
    out.write_all(prefix)?;
    out.write_all(line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::super::fixture::host_report;
    use super::*;
    use volley_common::outcome::{Fallback, FallbackReason, TransportKind};

    /// Feeds the chunks to one buffer, then finishes it; returns the lines joined by `|`.
    fn lines_of(chunks: &[&[u8]]) -> String {
        let mut buffer = LineBuffer::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            buffer
                .push(chunk, |line| {
                    lines.push(String::from_utf8_lossy(line).into_owned());
                    Ok(())
                })
                .unwrap();
        }
        buffer
            .finish(|line| {
                lines.push(String::from_utf8_lossy(line).into_owned());
                Ok(())
            })
            .unwrap();
        lines.join("|")
    }

    #[test]
    fn lines_are_assembled_across_chunks() {
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"a\nb\n"], "a|b"),
            (&[b"a", b"b\n"], "ab"),
            (&[b"a", b"", b"\n", b"b"], "a|b"),
            (&[b"\n\n"], "|"),
            (&[b"one\r\ntwo\r", b"\n"], "one|two"),
            (&[b"one\r", b"\r\n"], "one\r"),
            (&[b"unterminated"], "unterminated"),
            (&[b"unterminated\r"], "unterminated\r"),
            (&[b"x\n", b"tail"], "x|tail"),
            (&[b""], ""),
        ];
        for (chunks, expected) in cases {
            assert_eq!(lines_of(chunks), *expected, "chunks: {chunks:?}");
        }
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_lines() {
        let stream = b"alpha\r\nbeta\n\ngamma\rdelta\nepsilon";
        let whole = lines_of(&[stream]);
        assert_eq!(whole, "alpha|beta||gamma\rdelta|epsilon");
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(lines_of(&[a, b]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(lines_of(&bytes), whole);
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit_however_it_arrives() {
        let long = vec![b'x'; 100 * 1024];
        let expected = format!("{}|{}", "x".repeat(MAX_PARTIAL_LINE), "x".repeat(36 * 1024));
        assert_eq!(lines_of(&[&long]), expected);
        let pieces: Vec<&[u8]> = long.chunks(7000).collect();
        assert_eq!(lines_of(&pieces), expected);
        // A line of exactly the limit is not cut.
        let mut exact = vec![b'y'; MAX_PARTIAL_LINE];
        exact.push(b'\n');
        assert_eq!(
            lines_of(&[&exact[..10], &exact[10..]]),
            "y".repeat(MAX_PARTIAL_LINE)
        );
    }

    #[test]
    fn the_partial_buffer_stays_bounded() {
        let mut buffer = LineBuffer::default();
        let chunk = vec![b'z'; 10_000];
        for _ in 0..100 {
            buffer.push(&chunk, |_| Ok(())).unwrap();
            assert!(buffer.partial.len() <= MAX_PARTIAL_LINE);
        }
    }

    struct Rendered {
        out: Vec<u8>,
        err: Vec<u8>,
    }

    enum Step<'a> {
        Out(usize, &'a str),
        Err(usize, &'a str),
        Done(usize, Outcome),
        /// Finished after `auto` fell back to SSH.
        FellBack(usize, Outcome),
        /// Finished without ever starting.
        NeverStarted(usize, Outcome),
    }

    fn render(color: bool, steps: &[Step]) -> Rendered {
        let paint = Paint { enabled: color };
        let style = Style {
            out: paint,
            err: paint,
            prefix: true,
            then: false,
        };
        render_with(style, steps)
    }

    fn render_with(style: Style, steps: &[Step]) -> Rendered {
        let hosts = vec!["h01".to_owned(), "h02".to_owned(), "h03".to_owned()];
        let mut renderer = StreamRenderer::new(hosts.clone(), style);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for step in steps {
            match step {
                Step::Out(host, data) => {
                    renderer.output(*host, Stream::Stdout, data.as_bytes(), &mut out, &mut err)
                }
                Step::Err(host, data) => {
                    renderer.output(*host, Stream::Stderr, data.as_bytes(), &mut out, &mut err)
                }
                Step::Done(host, outcome) => {
                    let report = host_report(&hosts[*host], outcome.clone(), b"", b"");
                    renderer.finished(*host, &report, &mut out, &mut err)
                }
                Step::FellBack(host, outcome) => {
                    let mut report = host_report(&hosts[*host], outcome.clone(), b"", b"");
                    report.fallback = Some(Fallback {
                        reason: FallbackReason::ControllerCertificateRefused,
                        detail: "TLS rejected: the agent refused our certificate".to_string(),
                    });
                    renderer.finished(*host, &report, &mut out, &mut err)
                }
                Step::NeverStarted(host, outcome) => {
                    let mut report = host_report(&hosts[*host], outcome.clone(), b"", b"");
                    report.attempts = 0;
                    report.transport = TransportKind::Agent;
                    renderer.finished(*host, &report, &mut out, &mut err)
                }
            }
            .unwrap();
        }
        renderer.close(&mut out, &mut err).unwrap();
        Rendered { out, err }
    }

    #[test]
    fn interleaved_hosts_never_share_a_line() {
        let rendered = render(
            false,
            &[
                Step::Out(0, "hel"),
                Step::Out(1, "wor"),
                Step::Err(0, "warn"),
                Step::Out(0, "lo\nagain"),
                Step::Out(1, "ld\n"),
                Step::Err(1, "oops\n"),
                Step::Done(1, Outcome::Succeeded),
                Step::Done(0, Outcome::Succeeded),
            ],
        );
        assert_eq!(
            String::from_utf8(rendered.out).unwrap(),
            "h01: hello\nh02: world\nh01: again\n"
        );
        assert_eq!(
            String::from_utf8(rendered.err).unwrap(),
            "h02: oops\nh01: warn\n"
        );
    }

    #[test]
    fn a_failed_host_gets_a_line_on_stderr_after_its_output() {
        let steps = [
            Step::Err(0, "no such file"),
            Step::Done(0, Outcome::NonZeroExit { code: 2 }),
            Step::Done(
                1,
                Outcome::Unreachable {
                    reason: "connection refused".into(),
                },
            ),
            // A skipped host never ran; the summary lists it.
            Step::Done(2, Outcome::Skipped),
        ];
        let plain = render(false, &steps);
        assert_eq!(
            String::from_utf8(plain.err).unwrap(),
            "h01: no such file\n\
             h01: volley: exited with status 2 (ssh)\n\
             h02: volley: unreachable: connection refused (ssh)\n"
        );
        assert!(plain.out.is_empty());

        let coloured = render(
            true,
            &[
                Step::Out(0, "up\n"),
                Step::Done(
                    0,
                    Outcome::ConnectTimeout {
                        reason: String::new(),
                    },
                ),
            ],
        );
        assert_eq!(
            String::from_utf8(coloured.out).unwrap(),
            "\x1b[1;36mh01\x1b[0m: up\n"
        );
        assert_eq!(
            String::from_utf8(coloured.err).unwrap(),
            "\x1b[1;36mh01\x1b[0m: \x1b[31mvolley: connect timed out (ssh)\x1b[0m\n"
        );
    }

    #[test]
    fn a_failure_line_says_when_the_agent_was_passed_over_and_a_host_that_never_ran_has_none() {
        let rendered = render(
            false,
            &[
                Step::FellBack(0, Outcome::NonZeroExit { code: 1 }),
                Step::NeverStarted(1, Outcome::Cancelled),
            ],
        );
        assert_eq!(
            String::from_utf8(rendered.err).unwrap(),
            "h01: volley: exited with status 1 (ssh, fell back from the agent: the agent refused our certificate)\n"
        );
    }

    #[test]
    fn each_stream_gets_its_own_colours_and_no_prefix_leaves_the_lines_bare() {
        let steps = [
            Step::Out(0, "up\n"),
            Step::Err(0, "warn\n"),
            Step::Done(
                0,
                Outcome::ConnectTimeout {
                    reason: String::new(),
                },
            ),
        ];
        // A terminal on stdout, a file on stderr: no escape codes in the file.
        let style = Style {
            out: Paint { enabled: true },
            err: Paint { enabled: false },
            prefix: true,
            then: false,
        };
        let rendered = render_with(style, &steps);
        assert_eq!(
            String::from_utf8(rendered.out).unwrap(),
            "\x1b[1;36mh01\x1b[0m: up\n"
        );
        assert_eq!(
            String::from_utf8(rendered.err).unwrap(),
            "h01: warn\nh01: volley: connect timed out (ssh)\n"
        );
        let bare = Style {
            out: Paint { enabled: false },
            err: Paint { enabled: false },
            prefix: false,
            then: false,
        };
        let rendered = render_with(bare, &steps);
        assert_eq!(String::from_utf8(rendered.out).unwrap(), "up\n");
        assert_eq!(
            String::from_utf8(rendered.err).unwrap(),
            "warn\nh01: volley: connect timed out (ssh)\n"
        );
    }

    #[test]
    fn a_push_names_its_then_as_what_exited_or_was_killed() {
        let style = Style {
            out: Paint { enabled: false },
            err: Paint { enabled: false },
            prefix: true,
            then: true,
        };
        let steps = [
            Step::Done(0, Outcome::NonZeroExit { code: 1 }),
            Step::Done(
                1,
                Outcome::Signalled {
                    signal: "KILL".into(),
                },
            ),
            // The timeout covers the whole host, the files' writing too: not only the --then.
            Step::Done(2, Outcome::command_timeout()),
        ];
        assert_eq!(
            String::from_utf8(render_with(style, &steps).err).unwrap(),
            "h01: volley: --then exited with status 1 (ssh)\n\
             h02: volley: --then killed by signal KILL (ssh)\n\
             h03: volley: command timed out and was stopped (ssh)\n"
        );
    }

    #[test]
    fn output_of_a_host_that_never_finished_is_written_at_close() {
        let rendered = render(false, &[Step::Out(1, "half")]);
        assert_eq!(String::from_utf8(rendered.out).unwrap(), "h02: half\n");
    }
}
