//! The limits of one HTTP server and their validation.

use std::time::Duration;

/// Limits of one HTTP server. The defaults suit a public gateway on a
/// small machine; `orb-super run` and `orb-client daemon` set them from
/// flags (`--max-http-connections` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; a connection beyond it gets `503` and is
    /// closed. Default 1024: a file descriptor and a small task each, far
    /// below a default `ulimit -n` of 4096 even next to the QUIC side.
    pub max_connections: usize,
    /// Connections open at once from one IP address (IPv6: one /64, what
    /// a single host usually holds). Default 256, a quarter of the total, so
    /// one host cannot take every slot while a NAT full of browsers still
    /// fits.
    pub max_connections_per_ip: usize,
    /// A request head must arrive in full within this time from when the
    /// server starts waiting for it; a connection that sends nothing is
    /// closed after it too. Default 10 s: a real client sends its head in
    /// one round trip, a slowloris client is cut off quickly.
    pub header_timeout: Duration,
    /// A request body must arrive in full within this time of its head
    /// (else `408`), and a response write may make no progress for at most
    /// this long. Default 60 s: an 8 MiB body (the gateway's default
    /// `--max-body`) needs about 1.1 Mbit/s, which a slow mobile uplink
    /// still has, while a client trickling bytes holds its slot a minute
    /// at most.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger
    /// gets `431`. Default 64 KiB, far above what browsers and HTTP
    /// libraries send (8 to 16 KiB is common elsewhere).
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets `431`. Default 100
    /// (hyper's).
    pub max_headers: usize,
    /// Requests served on one keep-alive connection before the server asks
    /// the client to reconnect (`Connection: close`). `None` (the default):
    /// no limit.
    pub max_requests_per_connection: Option<u32>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_requests_per_connection: None,
        }
    }
}

/// A limit that makes no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// A count or a duration is zero; it names the setting.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl HttpLimits {
    /// Refuse zero counts and durations: a server that refuses everything
    /// is never what an operator meant.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let zero = [
            (self.max_connections == 0, "max_connections"),
            (self.max_connections_per_ip == 0, "max_connections_per_ip"),
            (self.header_timeout.is_zero(), "header_timeout"),
            (self.request_timeout.is_zero(), "request_timeout"),
            (self.max_header_bytes == 0, "max_header_bytes"),
            (self.max_headers == 0, "max_headers"),
            (
                self.max_requests_per_connection == Some(0),
                "max_requests_per_connection",
            ),
        ];
        match zero.iter().find(|(is_zero, _)| *is_zero) {
            Some((_, name)) => Err(LimitsError::Zero(name)),
            None => Ok(()),
        }
    }
}
