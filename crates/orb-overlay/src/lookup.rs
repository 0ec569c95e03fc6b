//! Iterative lookup state machine (FIND_NODE / FIND_VALUE).
//!
//! The lookup keeps a shortlist of candidates ordered by distance to the
//! target. It queries the closest not-yet-queried candidates among the `k`
//! closest that have not failed, at most `alpha` at a time, and is done when
//! those `k` have all answered (or no candidate is left). A FIND_VALUE lookup
//! stops sending once it holds a valid record and finishes when the RPCs
//! already in flight have settled, so its closest list is still useful.
//! Failed peers are skipped, so one dead node costs one timeout, not the
//! whole lookup; the core also enforces an overall deadline.

use std::collections::BTreeMap;

use orb_proto::dht::{Distance, Key, Record};
use orb_proto::{OrbId, PeerAddr};

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// The k closest servers to a key.
    FindNode,
    /// Records under a key (and the closest servers).
    FindValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    peer: PeerAddr,
    state: State,
    /// Referral depth: 1 for peers from our own table, n + 1 for peers
    /// learned from a depth-n answer.
    hop: u32,
}

/// One lookup's progress.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: Key,
    kind: LookupKind,
    local: OrbId,
    k: usize,
    alpha: usize,
    max_candidates: usize,
    candidates: BTreeMap<Distance, Candidate>,
    in_flight: usize,
    records: Vec<Record>,
    found: bool,
    queried: u32,
}

impl Lookup {
    /// A lookup for `target`, seeded with `seeds` (from the routing table).
    pub fn new(
        target: Key,
        kind: LookupKind,
        local: OrbId,
        k: usize,
        alpha: usize,
        seeds: Vec<PeerAddr>,
    ) -> Self {
        let k = k.max(1);
        let mut l = Lookup {
            target,
            kind,
            local,
            k,
            alpha: alpha.max(1),
            // Enough slack that failures near the front can be replaced by
            // farther candidates, while bounding memory per lookup.
            max_candidates: 8 * k,
            candidates: BTreeMap::new(),
            in_flight: 0,
            records: Vec::new(),
            found: false,
            queried: 0,
        };
        for p in seeds {
            l.add(p, 1);
        }
        l
    }

    /// The target key.
    pub fn target(&self) -> Key {
        self.target
    }

    /// The kind.
    pub fn kind(&self) -> LookupKind {
        self.kind
    }

    fn add(&mut self, peer: PeerAddr, hop: u32) {
        if peer.id == self.local {
            return;
        }
        let d = self.target.distance(&Key::for_node(&peer.id));
        if self.candidates.contains_key(&d) {
            return;
        }
        if self.candidates.len() >= self.max_candidates {
            // Drop the farthest candidate we have not asked yet, if it is
            // farther than the newcomer; never drop one in flight (its answer
            // must still find its slot).
            let victim = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| matches!(c.state, State::New | State::Failed))
                .map(|(d, _)| *d);
            match victim {
                Some(v) if v > d => {
                    self.candidates.remove(&v);
                }
                _ => return,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                peer,
                state: State::New,
                hop,
            },
        );
    }

    fn get_mut(&mut self, id: &OrbId) -> Option<&mut Candidate> {
        let d = self.target.distance(&Key::for_node(id));
        self.candidates.get_mut(&d)
    }

    /// The next peer to query, if the lookup may send now. Marks it in
    /// flight.
    pub fn next_query(&mut self) -> Option<PeerAddr> {
        if self.found || self.in_flight >= self.alpha {
            return None;
        }
        let k = self.k;
        let next = self
            .candidates
            .values_mut()
            .filter(|c| c.state != State::Failed)
            .take(k)
            .find(|c| c.state == State::New)?;
        next.state = State::InFlight;
        self.in_flight += 1;
        self.queried += 1;
        Some(next.peer)
    }

    /// `from` answered with `closer` peers and (FIND_VALUE) `records`, which
    /// the caller has verified.
    pub fn on_answer(&mut self, from: &OrbId, closer: Vec<PeerAddr>, records: Vec<Record>) {
        let Some(c) = self.get_mut(from) else {
            return;
        };
        if c.state != State::InFlight {
            return;
        }
        c.state = State::Answered;
        let hop = c.hop + 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        for p in closer.into_iter().take(orb_proto::dht::MAX_CLOSER) {
            self.add(p, hop);
        }
        for r in records {
            if r.key != self.target {
                continue;
            }
            self.found = true;
            // One record per publisher, the newest (names: highest
            // version, then seq).
            let held = self.records.len();
            match self.records.iter_mut().find(|x| x.publisher == r.publisher) {
                Some(x) if r.supersedes(x) => *x = r,
                Some(_) => {}
                None if held < orb_proto::dht::MAX_PROVIDERS => self.records.push(r),
                None => {}
            }
        }
    }

    /// The RPC to `from` failed.
    pub fn on_failure(&mut self, from: &OrbId) {
        if let Some(c) = self.get_mut(from)
            && c.state == State::InFlight
        {
            c.state = State::Failed;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// Whether the lookup has converged.
    pub fn is_done(&self) -> bool {
        if self.found {
            return self.in_flight == 0;
        }
        let mut answered = 0;
        for c in self.candidates.values() {
            match c.state {
                State::Failed => continue,
                State::Answered => {
                    answered += 1;
                    if answered >= self.k {
                        return true;
                    }
                }
                State::New | State::InFlight => return false,
            }
        }
        true
    }

    /// The closest peers that answered (at most k), closest first.
    pub fn closest(&self) -> Vec<PeerAddr> {
        self.answered().map(|c| c.peer).collect()
    }

    fn answered(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .take(self.k)
    }

    /// Referral depth needed to reach the result: the deepest hop among the
    /// closest peers that answered.
    pub fn rounds(&self) -> u32 {
        self.answered().map(|c| c.hop).max().unwrap_or(0)
    }

    /// Peers queried so far.
    pub fn queried(&self) -> u32 {
        self.queried
    }

    /// Records found, one per publisher.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Take the records found.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(first: u8) -> PeerAddr {
        let mut id = [0; 32];
        id[0] = first;
        PeerAddr {
            id: OrbId(id),
            addr: ([10, 0, 0, first], 1).into(),
        }
    }

    #[test]
    fn converges_and_skips_failures() {
        let seeds = vec![p(0x80), p(0x40)];
        let mut l = Lookup::new(Key([0; 32]), LookupKind::FindNode, p(0xff).id, 2, 3, seeds);
        let a = l.next_query().expect("first");
        let b = l.next_query().expect("second");
        assert!(l.next_query().is_none());
        assert_eq!(a, p(0x40));
        l.on_answer(&a.id, vec![p(0x01), p(0x02)], vec![]);
        l.on_failure(&b.id);
        assert!(!l.is_done());
        let c = l.next_query().expect("third");
        let d = l.next_query().expect("fourth");
        assert_eq!((c, d), (p(0x01), p(0x02)));
        l.on_answer(&c.id, vec![], vec![]);
        l.on_answer(&d.id, vec![], vec![]);
        assert!(l.is_done());
        assert_eq!(l.closest(), vec![p(0x01), p(0x02)]);
        assert_eq!(l.rounds(), 2);
    }
}
