//! What one HTTP server counts and logs: refusals and timeouts by reason,
//! each logged at most once per reason every few seconds.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::common::metrics::{Counter, Scrape};
use crate::common::util::lock;

/// Why the server refused or cut off a client. Also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// `max_connections` reached.
    RefusedConnections,
    /// `max_connections_per_ip` reached for the client's address.
    RefusedPerIp,
    /// A request head over `max_header_bytes` or `max_headers`.
    HeadersTooLarge,
    /// A request head started but did not finish within `header_timeout`.
    HeaderTimeout,
    /// A request body did not finish within `request_timeout`.
    BodyTimeout,
    /// A response write made no progress for `request_timeout`.
    WriteTimeout,
    /// The listener could not accept (out of file descriptors, say).
    AcceptFailed,
}

impl Event {
    const ALL: [Event; 7] = [
        Event::RefusedConnections,
        Event::RefusedPerIp,
        Event::HeadersTooLarge,
        Event::HeaderTimeout,
        Event::BodyTimeout,
        Event::WriteTimeout,
        Event::AcceptFailed,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Event::RefusedConnections => "HTTP connection refused: too many open connections",
            Event::RefusedPerIp => {
                "HTTP connection refused: too many open connections from one address"
            }
            Event::HeadersTooLarge => "HTTP request refused: head too large (431)",
            Event::HeaderTimeout => "HTTP connection closed: request head not received in time",
            Event::BodyTimeout => "HTTP request ended: body not received in time (408)",
            Event::WriteTimeout => "HTTP connection closed: client stopped reading the response",
            Event::AcceptFailed => "HTTP listener cannot accept; pausing",
        }
    }
}

/// Smallest gap between two log lines for one reason.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One `warn!` per reason per [`LOG_EVERY`]; the events in between are
/// counted and the next line reports them.
#[derive(Default)]
pub(super) struct LogLimiter {
    slots: Mutex<[(Option<Instant>, u64); Event::ALL.len()]>,
}

impl LogLimiter {
    /// Whether a line for `event` may be logged now; if so, how many
    /// events were not logged since the last line.
    pub(super) fn allow(&self, event: Event) -> Option<u64> {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        let (last, suppressed) = &mut slots[event.index()];
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

/// Counters of one HTTP server, for `/metrics` and the status JSON.
#[derive(Default)]
pub struct HttpStats {
    pub(super) open: AtomicU64,
    pub(super) accepted: Counter,
    refused_connections: Counter,
    refused_per_ip: Counter,
    refused_headers: Counter,
    timeouts_header: Counter,
    pub(super) timeouts_idle: Counter,
    timeouts_body: Counter,
    timeouts_write: Counter,
    pub(super) accept_errors: Counter,
    pub(super) log: LogLimiter,
}

/// A snapshot of [`HttpStats`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HttpStatsJson {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused at the total cap.
    pub refused_connections: u64,
    /// Connections refused at the per-address cap.
    pub refused_per_ip: u64,
    /// Requests refused for a head over the size or count limit (431).
    pub refused_headers: u64,
    /// Connections closed because a started request head did not finish.
    pub timeouts_header: u64,
    /// Connections closed because they sent nothing (no request, or none
    /// after the last one) within the header timeout.
    pub timeouts_idle: u64,
    /// Requests ended with 408 because the body did not finish.
    pub timeouts_body: u64,
    /// Connections closed because the client stopped reading a response.
    pub timeouts_write: u64,
    /// Failed accepts of the listener itself (out of file descriptors).
    pub accept_errors: u64,
}

impl HttpStats {
    fn counter(&self, event: Event) -> &Counter {
        match event {
            Event::RefusedConnections => &self.refused_connections,
            Event::RefusedPerIp => &self.refused_per_ip,
            Event::HeadersTooLarge => &self.refused_headers,
            Event::HeaderTimeout => &self.timeouts_header,
            Event::BodyTimeout => &self.timeouts_body,
            Event::WriteTimeout => &self.timeouts_write,
            Event::AcceptFailed => &self.accept_errors,
        }
    }

    /// Count and (rate-limited) log one refusal or timeout.
    pub(super) fn event(&self, what: &str, event: Event, peer: IpAddr) {
        self.counter(event).inc();
        if let Some(since_last_line) = self.log.allow(event) {
            warn!(
                server = what,
                peer = %peer,
                suppressed = since_last_line,
                "{} (similar events since the last line: {since_last_line}; see orb_http_* on /metrics)",
                event.message()
            );
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// A snapshot for JSON APIs.
    pub fn json(&self) -> HttpStatsJson {
        HttpStatsJson {
            connections_open: self.open(),
            connections_total: self.accepted.get(),
            refused_connections: self.refused_connections.get(),
            refused_per_ip: self.refused_per_ip.get(),
            refused_headers: self.refused_headers.get(),
            timeouts_header: self.timeouts_header.get(),
            timeouts_idle: self.timeouts_idle.get(),
            timeouts_body: self.timeouts_body.get(),
            timeouts_write: self.timeouts_write.get(),
            accept_errors: self.accept_errors.get(),
        }
    }

    /// Add `orb_http_connections_open`, `orb_http_connections_total`,
    /// `orb_http_refused_total{reason}`, `orb_http_timeouts_total{reason}`
    /// and `orb_http_accept_errors_total` to a scrape.
    pub fn scrape(&self, e: &mut Scrape) {
        let s = self.json();
        e.gauge(
            "orb_http_connections_open",
            "HTTP connections open now.",
            s.connections_open,
        );
        e.counter(
            "orb_http_connections",
            "HTTP connections accepted.",
            s.connections_total,
        );
        e.counters(
            "orb_http_refused",
            "HTTP connections or requests refused by a limit (connections: total cap, per_ip: \
             per-address cap, headers: request head too large).",
            "reason",
            &[
                ("connections", s.refused_connections),
                ("per_ip", s.refused_per_ip),
                ("headers", s.refused_headers),
            ],
        );
        e.counters(
            "orb_http_timeouts",
            "HTTP connections or requests cut off by a timeout (header: head too slow, idle: \
             nothing sent, body: body too slow, write: response not read).",
            "reason",
            &[
                ("header", s.timeouts_header),
                ("idle", s.timeouts_idle),
                ("body", s.timeouts_body),
                ("write", s.timeouts_write),
            ],
        );
        e.counter(
            "orb_http_accept_errors",
            "Accepts the HTTP listener failed (out of file descriptors, say).",
            s.accept_errors,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_reports_suppressed() {
        let l = LogLimiter::default();
        assert_eq!(l.allow(Event::RefusedPerIp), Some(0));
        for _ in 0..4 {
            assert_eq!(l.allow(Event::RefusedPerIp), None);
        }
        let slots = lock(&l.slots);
        assert_eq!(slots[Event::RefusedPerIp.index()].1, 4);
        assert_eq!(slots[Event::HeaderTimeout.index()], (None, 0));
    }
}
