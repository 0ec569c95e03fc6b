//! How two nodes try to meet, from what address discovery learned about
//! each of them.
//!
//! The cases, by the two sides' NAT behaviour (RFC 4787 terms):
//!
//! * One side lets in packets from anyone at its observed address (no NAT
//!   and no firewall, or endpoint-independent filtering): the other side
//!   simply dials it; both dial at once so either order works.
//! * Both map endpoint-independently (EIM, "Moderate"): each side knows the
//!   port the other will use, but the two first packets race. On Linux
//!   conntrack, a punch packet that reaches the other NAT *before* that
//!   side's own first packet left creates a conntrack entry there that
//!   takes the very port the other side's mapping wanted; its mapping then
//!   moves to another port, which the first NAT's filter drops. So both
//!   sides first send an *opener* with a small TTL: it passes (and opens)
//!   their own NAT and expires in the network before it reaches the other
//!   NAT. After [`opener_lead`], both dial for real and every packet finds
//!   the hole the other's opener made.
//! * One side maps per destination (EDM, "Strict", symmetric), the other
//!   endpoint-independently: the port the Strict side will use toward the
//!   other is unknowable, so it opens many mappings at once (one socket
//!   each) toward the other's one known port, and the other side probes
//!   random ports of the Strict side's IP until one hits (the birthday
//!   paradox: 256 mappings x 1,024 probes over 64,512 ports miss about 2% of
//!   the time).
//! * Both Strict: neither side can learn a port the other's filter will
//!   pass. Relay only; a punch is never tried.
//!
//! A side whose mapping is unknown (too few observations) gets the cheap
//! attempts only: a dial, or openers then a dial; never a birthday punch,
//! which costs hundreds of sockets and a thousand packets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NatMapping;

/// Whether a node's NAT or firewall lets in packets from a host the node
/// never sent to.
///
/// Only a dial-back from a different *IP address* than the one the node
/// talked to can show `Open`: a NAT with address-dependent filtering lets a
/// second port of the same host in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Filtering {
    /// Not tested, or the test was inconclusive.
    Unknown,
    /// Anyone may send to the node's observed address (full cone, or no
    /// NAT and no firewall).
    Open,
    /// Only hosts (and ports) the node sent to may answer.
    Filtered,
}

impl Filtering {
    /// A stable lower-case name for JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Filtering::Unknown => "unknown",
            Filtering::Open => "open",
            Filtering::Filtered => "filtered",
        }
    }
}

/// What address discovery learned about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatProfile {
    /// How its NAT maps its socket.
    pub mapping: NatMapping,
    /// Whether strangers may send to it.
    pub filtering: Filtering,
}

impl NatProfile {
    /// Nothing known yet.
    pub const UNKNOWN: NatProfile = NatProfile {
        mapping: NatMapping::Unknown,
        filtering: Filtering::Unknown,
    };

    /// A profile from its two parts.
    pub fn new(mapping: NatMapping, filtering: Filtering) -> Self {
        NatProfile { mapping, filtering }
    }

    /// Anyone who knows its observed address can reach it: a known-open
    /// filter, or no NAT at all with nothing saying it is firewalled.
    pub fn accepts_unsolicited(&self) -> bool {
        self.filtering == Filtering::Open
            || (self.mapping == NatMapping::None && self.filtering == Filtering::Unknown)
    }

    /// Uses one public port for every destination: no NAT (a stateful
    /// firewall behaves the same) or an endpoint-independent NAT.
    fn maps_independently(&self) -> bool {
        matches!(
            self.mapping,
            NatMapping::None | NatMapping::EndpointIndependent
        )
    }

    fn maps_per_destination(&self) -> bool {
        self.mapping == NatMapping::EndpointDependent
    }
}

/// Which half of a birthday punch a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BirthdayRole {
    /// The Strict (per-destination) side: opens many sockets, each sending
    /// a low-TTL opener toward the other side's one known address, and
    /// waits for a probe to arrive on any of them.
    Opener,
    /// The endpoint-independent side: probes many random ports of the
    /// Strict side's public IP from its one socket.
    Prober,
}

/// How to try for a direct path to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// At least one side takes unsolicited packets: both dial at once.
    Dial,
    /// Both map endpoint-independently: low-TTL openers first (see
    /// [`opener_ttl`]), then, after [`opener_lead`], both dial at once.
    OpenersThenDial,
    /// One side maps per destination, the other does not: a birthday
    /// punch, with this node in the given role.
    Birthday(BirthdayRole),
    /// Both map per destination: no punch can work; use the relay.
    RelayOnly,
}

impl Strategy {
    /// A stable lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Dial => "dial",
            Strategy::OpenersThenDial => "openers-then-dial",
            Strategy::Birthday(BirthdayRole::Opener) => "birthday-opener",
            Strategy::Birthday(BirthdayRole::Prober) => "birthday-prober",
            Strategy::RelayOnly => "relay-only",
        }
    }
}

/// The strategy for `me` to reach `peer`. Both sides reach the same
/// decision from the same two profiles (with the birthday roles swapped),
/// so each can decide alone.
pub fn choose_strategy(me: NatProfile, peer: NatProfile) -> Strategy {
    if me.accepts_unsolicited() || peer.accepts_unsolicited() {
        return Strategy::Dial;
    }
    match (me.maps_per_destination(), peer.maps_per_destination()) {
        (true, true) => Strategy::RelayOnly,
        (true, false) if peer.maps_independently() => Strategy::Birthday(BirthdayRole::Opener),
        (false, true) if me.maps_independently() => Strategy::Birthday(BirthdayRole::Prober),
        // Strict with unknown: a birthday punch would be a guess; a dial
        // costs a few packets and works if the unknown side turns out open.
        (true, false) | (false, true) => Strategy::Dial,
        (false, false) => Strategy::OpenersThenDial,
    }
}

/// Smallest TTL an opener is sent with. A TTL of 1 dies at the first
/// router, before the NAT it is meant to open has translated it.
pub const OPENER_TTL_MIN: u32 = 2;
/// Largest TTL an opener is sent with.
pub const OPENER_TTL_MAX: u32 = 4;

/// The TTL for openers after `failures` failed opener punches to a peer.
///
/// An opener must pass every NAT of its own side and expire before it
/// reaches the other side's NAT. A node does not know the hop count to
/// either, so it starts at 2 (the home router translates it, the first
/// router past it, usually the ISP's access router, drops it) and tries 3
/// and 4 after failures (a CGNAT or a second home router a hop or two
/// further out), then starts over. Between two different networks there
/// are nearly always more hops than that (own access router, the core, the
/// other side's access router), so the opener does not reach the other NAT.
pub fn opener_ttl(failures: u32) -> u32 {
    OPENER_TTL_MIN + failures % (OPENER_TTL_MAX - OPENER_TTL_MIN + 1)
}

/// How long after its openers a side starts dialing, given `rtt`, the sum
/// of both sides' round trips to the super that coordinated the punch
/// (what `PunchNow` carries).
///
/// The two sides learn of the punch at different times: at most about half
/// of that sum apart. Each side's dial must not reach the other NAT before
/// the other side's opener has left, so the lead covers that skew plus a
/// margin for scheduling, capped so a slow super does not stall the punch.
pub fn opener_lead(rtt: Duration) -> Duration {
    (rtt / 2 + Duration::from_millis(25)).min(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use BirthdayRole::*;
    use Filtering as F;
    use NatMapping as M;
    use Strategy::*;

    fn p(mapping: NatMapping, filtering: Filtering) -> NatProfile {
        NatProfile::new(mapping, filtering)
    }

    const MAPPINGS: [NatMapping; 4] = [
        M::Unknown,
        M::None,
        M::EndpointIndependent,
        M::EndpointDependent,
    ];
    const FILTERS: [Filtering; 3] = [F::Unknown, F::Open, F::Filtered];

    #[test]
    fn strategy_table() {
        let public = p(M::None, F::Unknown);
        let firewalled = p(M::None, F::Filtered);
        let full_cone = p(M::EndpointIndependent, F::Open);
        let moderate = p(M::EndpointIndependent, F::Filtered);
        let moderate_untested = p(M::EndpointIndependent, F::Unknown);
        let strict = p(M::EndpointDependent, F::Filtered);
        let strict_untested = p(M::EndpointDependent, F::Unknown);
        let unknown = NatProfile::UNKNOWN;
        let table = [
            // (me, peer, expected)
            (public, strict, Dial),
            (strict, public, Dial),
            (full_cone, strict, Dial),
            (strict, full_cone, Dial),
            (public, public, Dial),
            (moderate, moderate, OpenersThenDial),
            (moderate, moderate_untested, OpenersThenDial),
            (firewalled, moderate, OpenersThenDial),
            (moderate, strict, Birthday(Prober)),
            (strict, moderate, Birthday(Opener)),
            (strict_untested, moderate, Birthday(Opener)),
            (firewalled, strict, Birthday(Prober)),
            (strict, strict, RelayOnly),
            (strict, strict_untested, RelayOnly),
            (strict_untested, strict_untested, RelayOnly),
            (unknown, strict, Dial),
            (strict, unknown, Dial),
            (unknown, moderate, OpenersThenDial),
            (unknown, unknown, OpenersThenDial),
        ];
        for (me, peer, want) in table {
            assert_eq!(choose_strategy(me, peer), want, "{me:?} -> {peer:?}");
        }
    }

    /// Each side decides alone, so the two decisions must fit together:
    /// the same kind, and opposite birthday roles.
    #[test]
    fn both_sides_agree_for_every_pair() {
        let mut profiles = Vec::new();
        for m in MAPPINGS {
            for f in FILTERS {
                profiles.push(p(m, f));
            }
        }
        for &a in &profiles {
            for &b in &profiles {
                let (ab, ba) = (choose_strategy(a, b), choose_strategy(b, a));
                let fits = match (ab, ba) {
                    (Birthday(Opener), Birthday(Prober)) | (Birthday(Prober), Birthday(Opener)) => {
                        true
                    }
                    (Birthday(_), _) | (_, Birthday(_)) => false,
                    (x, y) => x == y,
                };
                assert!(fits, "{a:?} says {ab:?} but {b:?} says {ba:?}");
            }
        }
    }

    /// A birthday punch is only ever tried where it can work: a Strict side
    /// against a side known to map endpoint-independently.
    #[test]
    fn birthday_only_between_strict_and_known_independent() {
        for m1 in MAPPINGS {
            for f1 in FILTERS {
                for m2 in MAPPINGS {
                    for f2 in FILTERS {
                        let (a, b) = (p(m1, f1), p(m2, f2));
                        if let Birthday(role) = choose_strategy(a, b) {
                            let (strict, other) = match role {
                                Opener => (a, b),
                                Prober => (b, a),
                            };
                            assert_eq!(strict.mapping, M::EndpointDependent, "{a:?} {b:?}");
                            assert!(
                                matches!(other.mapping, M::None | M::EndpointIndependent),
                                "{a:?} {b:?}"
                            );
                            assert_ne!(strict.filtering, F::Open);
                            assert_ne!(other.filtering, F::Open);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn opener_ttl_starts_low_and_cycles() {
        let ttls: Vec<u32> = (0..7).map(opener_ttl).collect();
        assert_eq!(ttls, vec![2, 3, 4, 2, 3, 4, 2]);
        assert!(
            ttls.iter()
                .all(|t| (OPENER_TTL_MIN..=OPENER_TTL_MAX).contains(t))
        );
    }

    #[test]
    fn opener_lead_covers_the_skew_and_is_capped() {
        assert_eq!(opener_lead(Duration::ZERO), Duration::from_millis(25));
        assert_eq!(
            opener_lead(Duration::from_millis(100)),
            Duration::from_millis(75)
        );
        assert_eq!(opener_lead(Duration::from_secs(30)), Duration::from_secs(1));
    }
}
