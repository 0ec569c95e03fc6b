//! Where replicas go.
//!
//! A super ranks the clients connected to it: fewest replicas hosted
//! first, then least busy, and among equals a client on a network (public
//! IP) that holds no replica yet goes first, so one site's outage does not
//! take every replica. When other supers are known, the owner super keeps
//! about half of the replicas on its own clients and asks the others for
//! the rest.

use std::collections::HashSet;
use std::net::IpAddr;

use orb_proto::OrbId;

/// A client as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The client.
    pub id: OrbId,
    /// Calls it runs at once at most (0: it hosts nothing).
    pub capacity: u32,
    /// Replicas it hosts now, of any function.
    pub hosted: usize,
    /// Calls in flight on it now.
    pub in_flight: u32,
    /// Its public address as the super sees it.
    pub network: IpAddr,
    /// Whether it already holds the function being placed.
    pub holds: bool,
}

/// The candidates that could take a new replica, best first; `first` goes
/// first when it qualifies (`deploy --here`).
pub fn rank(candidates: &[Candidate], first: Option<OrbId>) -> Vec<OrbId> {
    let mut ranked: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.capacity > 0 && !c.holds)
        .collect();
    ranked.sort_by_key(|c| (c.hosted, c.in_flight, c.id));
    let mut used: HashSet<IpAddr> = candidates
        .iter()
        .filter(|c| c.holds)
        .map(|c| c.network)
        .collect();
    let mut out = spread_by_network(
        ranked.into_iter().map(|c| (c.id, c.network)).collect(),
        &mut used,
    );
    if let Some(first) = first
        && let Some(i) = out.iter().position(|id| *id == first)
    {
        let c = out.remove(i);
        out.insert(0, c);
    }
    out
}

/// Reorder `ranked` (best first) so that each pick comes from a network
/// not in `used` while there is one; otherwise keep the rank.
pub fn spread_by_network<T>(mut ranked: Vec<(T, IpAddr)>, used: &mut HashSet<IpAddr>) -> Vec<T> {
    let mut out = Vec::with_capacity(ranked.len());
    while !ranked.is_empty() {
        let i = ranked
            .iter()
            .position(|(_, ip)| !used.contains(ip))
            .unwrap_or(0);
        let (item, ip) = ranked.remove(i);
        used.insert(ip);
        out.push(item);
    }
    out
}

/// How many holders a super should reach on its own clients before asking
/// other supers: about half of `want` when other supers are known (the
/// replicas spread across home supers), all of it otherwise, and never
/// more than what the replicas held behind other supers (`remote`) leave.
pub fn local_target(want: usize, remote: usize, others_known: bool) -> usize {
    let quota = if others_known { want.div_ceil(2) } else { want };
    quota.min(want.saturating_sub(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> OrbId {
        OrbId([n; 32])
    }

    fn cand(n: u8, hosted: usize, in_flight: u32, net: u8) -> Candidate {
        Candidate {
            id: id(n),
            capacity: 4,
            hosted,
            in_flight,
            network: IpAddr::from([10, 0, 0, net]),
            holds: false,
        }
    }

    #[test]
    fn placement_spreads_over_networks_before_reusing_one() {
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        // Ranked best first: two on network a, then b, then c.
        let ranked = vec![(1, a), (2, a), (3, b), (4, c)];
        let mut used = HashSet::new();
        assert_eq!(
            spread_by_network(ranked.clone(), &mut used),
            vec![1, 3, 4, 2]
        );
        // A holder already on b: b's candidate waits its turn.
        let mut used = HashSet::from([b]);
        assert_eq!(spread_by_network(ranked, &mut used), vec![1, 4, 2, 3]);
    }

    #[test]
    fn fewest_hosted_then_least_busy_first() {
        let cs = [cand(1, 2, 0, 1), cand(2, 0, 3, 2), cand(3, 0, 1, 3)];
        assert_eq!(rank(&cs, None), vec![id(3), id(2), id(1)]);
    }

    #[test]
    fn holders_and_capacity_zero_are_never_candidates() {
        let mut holder = cand(1, 0, 0, 1);
        holder.holds = true;
        let mut lender = cand(2, 0, 0, 2);
        lender.capacity = 0;
        let free = cand(3, 5, 0, 1);
        // The holder's network (1) is used: 3 is still the only candidate.
        assert_eq!(rank(&[holder, lender, free], None), vec![id(3)]);
    }

    #[test]
    fn a_holders_network_goes_last() {
        let mut holder = cand(1, 0, 0, 1);
        holder.holds = true;
        let same_site = cand(2, 0, 0, 1);
        let other_site = cand(3, 1, 0, 2);
        assert_eq!(
            rank(&[holder, same_site, other_site], None),
            vec![id(3), id(2)]
        );
    }

    #[test]
    fn here_goes_first_when_it_qualifies() {
        let cs = [cand(1, 0, 0, 1), cand(2, 3, 0, 2)];
        assert_eq!(rank(&cs, Some(id(2))), vec![id(2), id(1)]);
        // Not a candidate (unknown): the ranking is unchanged.
        assert_eq!(rank(&cs, Some(id(9))), vec![id(1), id(2)]);
    }

    #[test]
    fn local_target_halves_with_other_supers_and_counts_remote_holders() {
        assert_eq!(local_target(3, 0, false), 3);
        assert_eq!(local_target(3, 0, true), 2);
        assert_eq!(local_target(4, 0, true), 2);
        assert_eq!(local_target(3, 2, true), 1);
        assert_eq!(local_target(2, 5, true), 0);
        assert_eq!(local_target(0, 0, true), 0);
    }
}
