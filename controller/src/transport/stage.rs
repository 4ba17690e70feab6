//! How far a connection attempt got, so that its failure or its timeout says what was dialled
//! (transport, address:port, jump hosts) and where it stopped: no answer to the TCP connect,
//! TCP connected but no SSH banner (or no TLS answer), non-SSH (or non-TLS) bytes from the
//! server, key exchange, authentication, TLS handshake, the agent's first answer.
//!
//! A [`Leg`] is one connection being set up. Its stream is wrapped in [`Observed`], which keeps
//! the first bytes the server sent: they tell silence from an HTTP server from an SSH banner
//! without parsing any error message. A connect timeout drops the connecting future, so the
//! stage lives outside it, in a [`Progress`] the caller keeps.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first bytes a server sent that are kept: enough for a banner or an HTTP status line.
const KEPT_BYTES: usize = 256;
/// The longest piece of a server's unexpected text quoted in a reason.
const QUOTED_CHARS: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    Tls,
}

/// Where a leg is. The stages before [`Stage::Secured`] are told apart by the bytes received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// TCP connect (or, through a jump host, opening a forwarded channel) in progress.
    Connecting,
    /// Connected; the SSH banner and key exchange, or the TLS handshake, in progress.
    Handshake,
    /// Key exchange or TLS done: SSH authentication, or the agent's first answer, in progress.
    Secured,
}

/// One connection being set up.
#[derive(Debug)]
pub struct Leg {
    /// What is dialled, for every reason: `ssh 10.0.0.1:22`, `ssh 10.0.0.1:22 via bastion`,
    /// `ssh jump host bastion (10.0.0.5:22)`, `agent 10.0.0.1:7731`.
    what: String,
    protocol: Protocol,
    /// The jump host that opens this leg's channel, if it is forwarded.
    via: Option<String>,
    state: Mutex<LegState>,
}

#[derive(Debug)]
struct LegState {
    stage: Stage,
    received: Vec<u8>,
}

impl Leg {
    pub fn new(protocol: Protocol, what: String, via: Option<String>) -> Arc<Leg> {
        Arc::new(Leg {
            what,
            protocol,
            via,
            state: Mutex::new(LegState {
                stage: Stage::Connecting,
                received: Vec::new(),
            }),
        })
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// The connection is up: wraps its stream so that the server's first bytes are kept.
    pub fn observe<S>(self: &Arc<Self>, stream: S) -> Observed<S> {
        self.reach(Stage::Handshake);
        Observed {
            inner: stream,
            leg: self.clone(),
            watching: true,
        }
    }

    pub fn reach(&self, stage: Stage) {
        let mut state = self.state();
        state.stage = state.stage.max(stage);
    }

    /// Keeps the start of what the server sent; whether more is still wanted.
    fn received(&self, bytes: &[u8]) -> bool {
        let mut state = self.state();
        let room = KEPT_BYTES.saturating_sub(state.received.len());
        state
            .received
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        state.received.len() < KEPT_BYTES
    }

    /// Why the leg did not complete within `after`.
    pub fn stalled(&self, after: Duration) -> String {
        let within = Seconds(after);
        let what = &self.what;
        let state = self.state();
        match (state.stage, self.protocol) {
            (Stage::Connecting, _) => match &self.via {
                Some(hop) => format!("{what}: jump host {hop} opened no channel within {within}"),
                None => format!("{what}: no answer to the TCP connect within {within}"),
            },
            (Stage::Handshake, protocol) => match Received::of(&state.received, protocol) {
                Received::Nothing => match protocol {
                    Protocol::Ssh => {
                        format!("{what}: TCP connected, but no SSH banner within {within}")
                    }
                    Protocol::Tls => {
                        format!("{what}: TCP connected, but no TLS answer within {within}")
                    }
                },
                Received::Foreign(text) => foreign(what, protocol, &text),
                Received::Banner(banner) => {
                    format!("{what}: key exchange with {banner} did not finish within {within}")
                }
                Received::Tls => format!("{what}: TLS handshake did not finish within {within}"),
            },
            (Stage::Secured, Protocol::Ssh) => {
                format!("{what}: authentication did not finish within {within}")
            }
            (Stage::Secured, Protocol::Tls) => {
                format!("{what}: the agent did not answer within {within}")
            }
        }
    }

    /// Why the handshake failed with `error`: the stage, and what the server sent when that
    /// explains more than the error does.
    pub fn failed(&self, error: &dyn fmt::Display) -> String {
        let what = &self.what;
        let state = self.state();
        match Received::of(&state.received, self.protocol) {
            Received::Foreign(text) => foreign(what, self.protocol, &text),
            Received::Nothing if self.protocol == Protocol::Ssh => {
                format!("{what}: the server sent no SSH banner ({error})")
            }
            Received::Nothing => format!("{what}: TLS handshake: no answer ({error})"),
            Received::Banner(banner) => format!("{what}: key exchange with {banner}: {error}"),
            Received::Tls => format!("{what}: TLS handshake: {error}"),
        }
    }

    /// Why the server turned the connection away before its banner, if it said so as sshd
    /// does past its `MaxStartups` (too many connections not yet authenticated, its own users'
    /// included): a moment later it may take one.
    pub fn turned_away(&self) -> Option<String> {
        let state = self.state();
        state
            .received
            .starts_with(b"Exceeded MaxStartups")
            .then(|| {
                format!(
                    "{}: the server turned the connection away: \"Exceeded MaxStartups\" (too \
                 many connections not yet logged in, its sshd's MaxStartups)",
                    self.what
                )
            })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LegState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn foreign(what: &str, protocol: Protocol, text: &str) -> String {
    let expected = match protocol {
        Protocol::Ssh => "an SSH server",
        Protocol::Tls => "a TLS server",
    };
    format!("{what}: not {expected}: it sent {text:?}")
}

/// What the kept bytes say about the server.
enum Received {
    Nothing,
    /// The server's SSH identification line (complete or not).
    Banner(String),
    /// TLS records.
    Tls,
    /// Something else; its first line, cut short.
    Foreign(String),
}

impl Received {
    fn of(bytes: &[u8], protocol: Protocol) -> Received {
        if bytes.is_empty() {
            return Received::Nothing;
        }
        match protocol {
            // A server may send lines before its identification (RFC 4253, 4.2).
            Protocol::Ssh => match bytes
                .split(|&byte| byte == b'\n')
                .find(|line| line.starts_with(b"SSH-"))
            {
                Some(line) => Received::Banner(text(line)),
                None => Received::Foreign(text(bytes)),
            },
            // A TLS record starts with its type (20 to 23) and major version 3.
            Protocol::Tls
                if (20..=23).contains(&bytes[0])
                    && bytes.get(1).is_none_or(|&major| major == 3) =>
            {
                Received::Tls
            }
            Protocol::Tls => Received::Foreign(text(bytes)),
        }
    }
}

/// The first line of `bytes` as text, cut to a length fit for a one-line reason.
fn text(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&byte| byte == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    match line.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

/// A duration as an operator writes it: `10s`, `2.5s`, `300ms`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis < 1000 {
            write!(f, "{millis}ms")
        } else if millis.is_multiple_of(1000) {
            write!(f, "{}s", millis / 1000)
        } else {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        }
    }
}

/// The leg an attempt is on, to be described when the attempt's time is up. An attempt that
/// waits for a connection another one makes (a shared jump host) follows that one's progress.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<Mutex<Current>>);

#[derive(Debug, Default)]
enum Current {
    #[default]
    NotStarted,
    On(Arc<Leg>),
    Following(Progress),
}

impl Progress {
    pub fn on(&self, leg: &Arc<Leg>) {
        *self.current() = Current::On(leg.clone());
    }

    pub fn follow(&self, other: &Progress) {
        *self.current() = Current::Following(other.clone());
    }

    /// An attempt whose connection is up already and whose server has spoken, for tests of
    /// what comes after it.
    #[cfg(test)]
    pub fn connected() -> Progress {
        let progress = Progress::silent_server();
        if let Current::On(leg) = &*progress.current() {
            leg.received(b"SSH-2.0-test\r\n");
        }
        progress
    }

    /// An attempt whose connection is up and whose server has sent nothing, for tests.
    #[cfg(test)]
    pub fn silent_server() -> Progress {
        let leg = Leg::new(Protocol::Ssh, "ssh test:22".to_string(), None);
        leg.reach(Stage::Handshake);
        let progress = Progress::default();
        progress.on(&leg);
        progress
    }

    /// Whether the attempt is still waiting for its connection to be up (TCP, or a channel
    /// through a jump host): until then it costs no CPU, and takes no handshake turn.
    pub fn connecting(&self) -> bool {
        let current = self.current();
        match &*current {
            Current::NotStarted => true,
            Current::On(leg) => leg.state().stage == Stage::Connecting,
            Current::Following(other) => other.connecting(),
        }
    }

    /// Whether the attempt's connection is up and the server has sent nothing yet: it costs no
    /// CPU either (the server's banner, or its TLS answer, is what the handshake waits for).
    pub fn silent(&self) -> bool {
        let current = self.current();
        match &*current {
            Current::NotStarted => false,
            Current::On(leg) => {
                let state = leg.state();
                state.stage == Stage::Handshake && state.received.is_empty()
            }
            Current::Following(other) => other.silent(),
        }
    }

    /// Why the attempt did not complete within `after`.
    pub fn stalled(&self, after: Duration) -> String {
        let current = self.current();
        match &*current {
            Current::NotStarted => format!("nothing was dialled within {}", Seconds(after)),
            Current::On(leg) => leg.stalled(after),
            Current::Following(other) => other.stalled(after),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stream whose first received bytes are kept in its leg.
pub struct Observed<S> {
    inner: S,
    leg: Arc<Leg>,
    watching: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Observed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.watching && matches!(poll, Poll::Ready(Ok(()))) {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.watching = self.leg.received(new);
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Observed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    fn ssh() -> Arc<Leg> {
        Leg::new(Protocol::Ssh, "ssh 10.0.0.1:22".to_string(), None)
    }

    /// `leg` after the server sent `bytes` on its observed stream.
    async fn after_receiving(leg: &Arc<Leg>, bytes: &[u8]) {
        let mut observed = leg.observe(bytes);
        let mut sink = Vec::new();
        observed.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink, bytes);
    }

    #[tokio::test]
    async fn ssh_stages() {
        let leg = ssh();
        assert_eq!(
            leg.stalled(TEN),
            "ssh 10.0.0.1:22: no answer to the TCP connect within 10s"
        );
        after_receiving(&leg, b"").await;
        assert_eq!(
            leg.stalled(Duration::from_millis(2500)),
            "ssh 10.0.0.1:22: TCP connected, but no SSH banner within 2.5s"
        );
        assert_eq!(
            leg.failed(&"Disconnected"),
            "ssh 10.0.0.1:22: the server sent no SSH banner (Disconnected)"
        );
        after_receiving(&leg, b"hello\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n\x00\x00").await;
        assert_eq!(
            leg.stalled(TEN),
            "ssh 10.0.0.1:22: key exchange with SSH-2.0-OpenSSH_9.2p1 Debian did not finish \
             within 10s"
        );
        assert_eq!(
            leg.failed(&"No common cipher"),
            "ssh 10.0.0.1:22: key exchange with SSH-2.0-OpenSSH_9.2p1 Debian: No common cipher"
        );
        leg.reach(Stage::Secured);
        assert_eq!(
            leg.stalled(Duration::from_millis(300)),
            "ssh 10.0.0.1:22: authentication did not finish within 300ms"
        );
        let through = Leg::new(
            Protocol::Ssh,
            "ssh 10.0.0.1:22 via bastion".to_string(),
            Some("bastion".to_string()),
        );
        assert_eq!(
            through.stalled(TEN),
            "ssh 10.0.0.1:22 via bastion: jump host bastion opened no channel within 10s"
        );
    }

    #[tokio::test]
    async fn a_server_past_its_max_startups_turned_the_connection_away() {
        let leg = Leg::new(Protocol::Ssh, "ssh 10.0.0.1:22".to_string(), None);
        leg.reach(Stage::Handshake);
        assert_eq!(leg.turned_away(), None);
        leg.received(b"Exceeded MaxStartups\r\n");
        assert_eq!(
            leg.turned_away().as_deref(),
            Some(
                "ssh 10.0.0.1:22: the server turned the connection away: \"Exceeded MaxStartups\" \
                 (too many connections not yet logged in, its sshd's MaxStartups)"
            )
        );
    }

    #[tokio::test]
    async fn foreign_servers_are_quoted() {
        let leg = ssh();
        after_receiving(
            &leg,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let expected = r#"ssh 10.0.0.1:22: not an SSH server: it sent "HTTP/1.1 400 Bad Request""#;
        assert_eq!(leg.failed(&"Disconnected"), expected);
        assert_eq!(leg.stalled(TEN), expected);
        let leg = ssh();
        after_receiving(&leg, &[0xff; 300]).await;
        let text = leg.failed(&"x");
        assert!(text.starts_with("ssh 10.0.0.1:22: not an SSH server: it sent \"\u{fffd}"));
        assert!(text.ends_with("...\""), "{text}");

        let tls = Leg::new(Protocol::Tls, "agent 10.0.0.1:7731".to_string(), None);
        after_receiving(&tls, b"SSH-2.0-OpenSSH_9.2\r\n").await;
        assert_eq!(
            tls.failed(&"corrupt message"),
            r#"agent 10.0.0.1:7731: not a TLS server: it sent "SSH-2.0-OpenSSH_9.2""#
        );
    }

    #[tokio::test]
    async fn tls_stages() {
        let tls = Leg::new(Protocol::Tls, "agent 10.0.0.1:7731".to_string(), None);
        let progress = Progress::default();
        progress.on(&tls);
        after_receiving(&tls, b"").await;
        assert_eq!(
            progress.stalled(TEN),
            "agent 10.0.0.1:7731: TCP connected, but no TLS answer within 10s"
        );
        after_receiving(&tls, &[22, 3, 3, 0, 10]).await;
        assert_eq!(
            progress.stalled(TEN),
            "agent 10.0.0.1:7731: TLS handshake did not finish within 10s"
        );
        assert_eq!(
            tls.failed(&"invalid peer certificate: UnknownIssuer"),
            "agent 10.0.0.1:7731: TLS handshake: invalid peer certificate: UnknownIssuer"
        );
        tls.reach(Stage::Secured);
        let waiting = Progress::default();
        waiting.follow(&progress);
        assert_eq!(
            waiting.stalled(TEN),
            "agent 10.0.0.1:7731: the agent did not answer within 10s"
        );
    }
}
