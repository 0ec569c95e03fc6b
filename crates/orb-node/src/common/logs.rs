//! Function logs kept by replicas, and gathering them.
//!
//! A replica keeps, per function it hosts, a ring of the last
//! [`MAX_ENTRIES_PER_REPLICA`] entries: the stderr lines of each call it ran
//! (each cut at [`orb_proto::logs::MAX_LOG_LINE`] bytes) and one summary
//! line per call. Nothing else is kept, nowhere: the owner's `logs` asks the
//! replicas each time.

use std::collections::{HashMap, HashSet, VecDeque};

use orb_proto::OrbId;
use orb_proto::logs::{LogEntry, LogKind, MAX_LOG_ANSWER, MAX_LOG_LINE, cut_line};
use orb_proto::wire::{RunOutcome, RunStatus};

/// Entries a replica keeps per function.
pub const MAX_ENTRIES_PER_REPLICA: usize = 1000;
/// Stderr lines kept from one call at most (its summary comes on top), so
/// one chatty call cannot push every other call out of the ring.
pub const MAX_LINES_PER_CALL: usize = 50;
/// Functions with a ring at most (a replica hosts far fewer).
pub const MAX_RINGS: usize = 4096;

/// The rings of one node, by function name.
#[derive(Debug, Default)]
pub struct LogBook {
    rings: HashMap<String, VecDeque<LogEntry>>,
    next_seq: u64,
}

impl LogBook {
    /// Record one call of `function` that ended at `time_ms` on `node`.
    pub fn record(
        &mut self,
        function: &str,
        node: OrbId,
        request_id: &str,
        time_ms: u64,
        outcome: &RunOutcome,
    ) {
        if !self.rings.contains_key(function) && self.rings.len() >= MAX_RINGS {
            return;
        }
        let lines: Vec<&str> = outcome
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let skipped = lines.len().saturating_sub(MAX_LINES_PER_CALL);
        let mut kinds: Vec<LogKind> = lines
            .into_iter()
            .skip(skipped)
            .map(|l| LogKind::Stderr(cut_line(l, MAX_LOG_LINE)))
            .collect();
        if skipped > 0 {
            kinds.insert(
                0,
                LogKind::Stderr(format!(
                    "[{skipped} earlier stderr lines of this call not kept]"
                )),
            );
        }
        kinds.push(LogKind::Call {
            status: status_text(&outcome.status),
            duration_us: outcome.duration_us,
            fuel: outcome.fuel_used,
        });
        let ring = self.rings.entry(function.to_string()).or_default();
        for kind in kinds {
            self.next_seq += 1;
            if ring.len() >= MAX_ENTRIES_PER_REPLICA {
                ring.pop_front();
            }
            ring.push_back(LogEntry {
                time_ms,
                node,
                seq: self.next_seq,
                request_id: cut_line(request_id, 64),
                kind,
            });
        }
    }

    /// The newest entries of `function` at or after `since_ms`, oldest
    /// first, at most [`MAX_LOG_ANSWER`].
    pub fn read(&self, function: &str, since_ms: u64) -> Vec<LogEntry> {
        let Some(ring) = self.rings.get(function) else {
            return Vec::new();
        };
        let mut out: Vec<LogEntry> = ring
            .iter()
            .rev()
            .take_while(|e| e.time_ms >= since_ms)
            .take(MAX_LOG_ANSWER)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Forget the ring of a function no longer hosted here.
    pub fn forget(&mut self, function: &str) {
        self.rings.remove(function);
    }
}

/// `ok`, `exit N`, `trap: MESSAGE` or `limit: NAME`.
pub fn status_text(status: &RunStatus) -> String {
    match status {
        RunStatus::Exited(0) => "ok".into(),
        RunStatus::Exited(code) => format!("exit {code}"),
        RunStatus::Trapped(msg) => cut_line(&format!("trap: {msg}"), 200),
        RunStatus::LimitExceeded { limit, .. } => cut_line(&format!("limit: {limit}"), 200),
    }
}

/// Merge the answers of several nodes: each entry once (by node and seq),
/// in time order, the newest [`MAX_LOG_ANSWER`].
pub fn merge(answers: impl IntoIterator<Item = Vec<LogEntry>>) -> Vec<LogEntry> {
    let mut seen: HashSet<(OrbId, u64)> = HashSet::new();
    let mut all: Vec<LogEntry> = answers
        .into_iter()
        .flatten()
        .filter(|e| seen.insert((e.node, e.seq)))
        .collect();
    all.sort_by_key(|a| (a.time_ms, a.node, a.seq));
    let over = all.len().saturating_sub(MAX_LOG_ANSWER);
    all.drain(..over);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stderr: &str, code: i32) -> RunOutcome {
        RunOutcome {
            status: RunStatus::Exited(code),
            fuel_used: 7,
            duration_us: 1500,
            stderr: stderr.into(),
            http: None,
        }
    }

    fn node(i: u8) -> OrbId {
        orb_proto::Keypair::from_seed([i; 32]).id()
    }

    #[test]
    fn a_call_leaves_its_lines_and_a_summary() {
        let mut b = LogBook::default();
        let long = "y".repeat(10_000);
        b.record(
            "f",
            node(1),
            "r1",
            100,
            &outcome(&format!("one\n\n{long}\n"), 3),
        );
        let e = b.read("f", 0);
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[0].kind, LogKind::Stderr("one".into()));
        match &e[1].kind {
            LogKind::Stderr(l) => {
                assert!(l.len() <= MAX_LOG_LINE);
                assert!(l.ends_with("[cut: 10000 bytes]"), "{l}");
            }
            other => panic!("expected a line, got {other:?}"),
        }
        assert_eq!(
            e[2].kind,
            LogKind::Call {
                status: "exit 3".into(),
                duration_us: 1500,
                fuel: 7
            }
        );
        assert!(e.iter().all(|x| x.request_id == "r1" && x.time_ms == 100));
        assert!(b.read("g", 0).is_empty());
        assert!(b.read("f", 101).is_empty());
    }

    #[test]
    fn rings_are_bounded() {
        let mut b = LogBook::default();
        let chatty = "line\n".repeat(200);
        for i in 0..100u64 {
            b.record("f", node(1), "r", i, &outcome(&chatty, 0));
        }
        assert_eq!(b.rings["f"].len(), MAX_ENTRIES_PER_REPLICA);
        // One call keeps MAX_LINES_PER_CALL lines, a note and its summary.
        let last: Vec<_> = b.rings["f"].iter().filter(|e| e.time_ms == 99).collect();
        assert_eq!(last.len(), MAX_LINES_PER_CALL + 2);
        assert_eq!(b.read("f", 0).len(), MAX_LOG_ANSWER);
        b.forget("f");
        assert!(b.read("f", 0).is_empty());
        for i in 0..MAX_RINGS + 5 {
            b.record(&format!("f{i}"), node(1), "r", 1, &outcome("", 0));
        }
        assert_eq!(b.rings.len(), MAX_RINGS);
    }

    #[test]
    fn merging_dedups_and_orders() {
        let mut a = LogBook::default();
        let mut c = LogBook::default();
        a.record("f", node(1), "r1", 10, &outcome("a\n", 0));
        c.record("f", node(2), "r2", 5, &outcome("c\n", 0));
        // The same replica asked through two of its supers.
        let merged = merge([a.read("f", 0), c.read("f", 0), a.read("f", 0)]);
        let times: Vec<u64> = merged.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, vec![5, 5, 10, 10]);
    }
}
