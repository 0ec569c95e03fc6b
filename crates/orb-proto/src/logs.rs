//! Function logs: what a replica keeps of the calls it ran (stderr lines and
//! one summary per call), and the owner's signed query for them.
//!
//! Logs are the owner's only. The owner's daemon signs a [`LogsQuery`] with
//! its node key and sends it to its super; the super and every node the
//! query reaches from there (other supers, the replicas) check the
//! signature, the query's age and that the signer owns the name (from the
//! name record), so none of them has to trust the node that passed the
//! query on. A signed query names one function and expires after
//! [`MAX_QUERY_AGE_MS`], so it cannot be turned into a query for another
//! function or kept for later.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{IdError, Keypair, OrbId, PublicKey, Signature};

/// Longest log line kept, in bytes; longer lines are cut (see
/// [`cut_line`]).
pub const MAX_LOG_LINE: usize = 1024;

/// Most entries in one [`crate::wire::Response::Logs`] answer (a frame of
/// well under [`crate::limits::MAX_FRAME`] at [`MAX_LOG_LINE`]).
pub const MAX_LOG_ANSWER: usize = 500;

/// How far a query's `issued_ms` may be from the verifier's clock, either
/// way.
pub const MAX_QUERY_AGE_MS: u64 = 2 * 60 * 1000;

const DOMAIN: &[u8] = b"orb-logs-query-v1";

/// What the owner asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Function name.
    pub name: String,
    /// Entries at or after this time (Unix milliseconds); 0 for all kept.
    pub since_ms: u64,
    /// When the owner signed the query (Unix milliseconds).
    pub issued_ms: u64,
}

/// A query with the owner's key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLogsQuery {
    /// The query.
    pub query: LogsQuery,
    /// The signer's public key (the owner's, if the query is genuine).
    pub key: PublicKey,
    /// Signature over the domain-separated encoding of `query`.
    pub signature: Signature,
}

/// Why a logs query was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LogsError {
    /// The signature does not verify.
    #[error("logs query signature does not verify")]
    BadSignature,
    /// The query is too old, or from too far in the future.
    #[error("logs query issued at {issued_ms}, too far from now ({now_ms})")]
    Stale {
        /// When it was issued.
        issued_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The query cannot be encoded.
    #[error("logs query cannot be encoded: {0}")]
    Encoding(String),
}

impl LogsQuery {
    fn signing_bytes(&self) -> Result<Vec<u8>, LogsError> {
        let mut msg = DOMAIN.to_vec();
        msg.extend(codec::encode(self).map_err(|e| LogsError::Encoding(e.to_string()))?);
        Ok(msg)
    }

    /// Sign as `keypair` (the owner).
    pub fn sign(self, keypair: &Keypair) -> Result<SignedLogsQuery, LogsError> {
        let signature = keypair.sign(&self.signing_bytes()?);
        Ok(SignedLogsQuery {
            query: self,
            key: keypair.public(),
            signature,
        })
    }
}

impl SignedLogsQuery {
    /// Check the signature and the query's age against `now_ms`; the ID of
    /// the signer on success. Whether the signer owns the function is the
    /// caller's to check.
    pub fn verify(&self, now_ms: u64) -> Result<OrbId, LogsError> {
        if self.query.issued_ms.abs_diff(now_ms) > MAX_QUERY_AGE_MS {
            return Err(LogsError::Stale {
                issued_ms: self.query.issued_ms,
                now_ms,
            });
        }
        self.key
            .verify(&self.query.signing_bytes()?, &self.signature)
            .map_err(|e: IdError| match e {
                IdError::BadSignature | IdError::BadKey => LogsError::BadSignature,
                other => LogsError::Encoding(other.to_string()),
            })?;
        Ok(self.key.id())
    }
}

/// One log entry of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the call that wrote it ended (Unix milliseconds).
    pub time_ms: u64,
    /// The replica's node.
    pub node: OrbId,
    /// The entry's number in that replica's log (increasing), so entries
    /// gathered twice can be told apart from new ones.
    pub seq: u64,
    /// The call's request ID.
    pub request_id: String,
    /// What it says.
    pub kind: LogKind,
}

/// What a log entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogKind {
    /// A line the function wrote to stderr (at most [`MAX_LOG_LINE`] bytes).
    Stderr(String),
    /// The summary of one call.
    Call {
        /// `ok`, `exit N`, `trap: ...` or `limit: NAME`.
        status: String,
        /// Wall-clock duration in microseconds.
        duration_us: u64,
        /// Fuel used.
        fuel: u64,
    },
}

/// `line` cut to at most `max` bytes (on a character boundary), with a note
/// of how much went, so a function writing a huge line costs the logs a
/// bounded amount and the reader sees that it was cut.
pub fn cut_line(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let note = format!(" [cut: {} bytes]", line.len());
    let keep = max.saturating_sub(note.len());
    let mut end = keep.min(line.len());
    while end > 0 && !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn query(name: &str) -> LogsQuery {
        LogsQuery {
            name: name.into(),
            since_ms: 0,
            issued_ms: NOW,
        }
    }

    #[test]
    fn signed_queries_verify_and_name_their_signer() {
        let k = Keypair::from_seed([3; 32]);
        let q = query("f").sign(&k).expect("sign");
        assert_eq!(q.verify(NOW + 1000), Ok(k.id()));
        assert!(matches!(
            q.verify(NOW + MAX_QUERY_AGE_MS + 1),
            Err(LogsError::Stale { .. })
        ));
        assert!(matches!(
            q.verify(NOW - MAX_QUERY_AGE_MS - 1),
            Err(LogsError::Stale { .. })
        ));
        // Turned into a query for another function: refused.
        let mut other = q.clone();
        other.query.name = "g".into();
        assert_eq!(other.verify(NOW), Err(LogsError::BadSignature));
        // Claimed by another key: refused.
        let mut stolen = q;
        stolen.key = Keypair::from_seed([4; 32]).public();
        assert_eq!(stolen.verify(NOW), Err(LogsError::BadSignature));
    }

    #[test]
    fn long_lines_are_cut_with_a_note() {
        assert_eq!(cut_line("short", 10), "short");
        let long = "x".repeat(5000);
        let cut = cut_line(&long, MAX_LOG_LINE);
        assert!(cut.len() <= MAX_LOG_LINE, "{}", cut.len());
        assert!(cut.ends_with(" [cut: 5000 bytes]"), "{cut}");
        // Never in the middle of a character.
        let wide = "é".repeat(1000);
        let cut = cut_line(&wide, 101);
        assert!(cut.len() <= 101);
        assert!(cut.starts_with('é'));
    }
}
