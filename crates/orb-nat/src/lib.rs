//! NAT traversal logic, sans IO.
//!
//! This crate decides; `orb-node` does the sending. It holds:
//!
//! * [`classify`]: the NAT mapping behaviour from the addresses several
//!   supers observed for one socket (STUN-like discovery).
//! * [`choose_strategy`]: how two nodes try to meet, from both sides'
//!   [`NatProfile`]s: a plain dial, low-TTL openers then a dial
//!   ([`opener_ttl`], [`opener_lead`]), a birthday punch (which side plays
//!   which [`BirthdayRole`]), or the relay only.
//! * The birthday punch: [`BirthdayLimits`], the prober's
//!   [`BirthdayProber`] (random distinct ports, paced, bounded, under a
//!   global [`ProbeBudget`]) and [`PunchBackoff`] after failures.
//! * [`PunchSchedule`]: when to send plain hole-punch dial waves, timed to
//!   the measured round trip.
//! * [`TokenBucket`]: rate and volume quotas for relays and punch requests,
//!   and [`PeerLimiter`], a bounded set of them keyed by peer.
//! * [`RelayBook`] and [`CircuitMeter`]: how many relay circuits a super
//!   carries (in all and per node), how fast and how much each circuit may
//!   move, and how much all circuits of one node may move together.
//! * [`PathKind`] and [`plan_dial`]: which kind of path two nodes try first
//!   (LAN when they share a public IP, then punching, then a relay).
//!
//! Time is always passed in, so everything here is deterministic and
//! tested without sockets.

mod birthday;
mod classify;
mod dial;
mod quota;
mod relay;
mod schedule;
mod strategy;

pub use birthday::{
    BirthdayLimits, BirthdayOpener, BirthdayProber, LOWEST_PROBE_PORT, MAX_BIRTHDAY_PROBES,
    MAX_BIRTHDAY_SOCKETS, PortSequence, ProbeBudget, PunchBackoff,
};
pub use classify::{NatMapping, classify};
pub use dial::{NodeAddrs, PathKind, plan_dial};
pub use quota::{PeerLimiter, TokenBucket};
pub use relay::{CircuitMeter, RelayBook, RelayLimits, RelayRefusal};
pub use schedule::PunchSchedule;
pub use strategy::{
    BirthdayRole, Filtering, NatProfile, OPENER_TTL_MAX, OPENER_TTL_MIN, Strategy, choose_strategy,
    opener_lead, opener_ttl,
};
