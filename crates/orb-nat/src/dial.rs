//! Which path two nodes try first, and the addresses to dial.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// How two nodes reach each other, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PathKind {
    /// Directly, over their shared LAN.
    DirectLan,
    /// Directly, over the internet (public addresses or a punched hole).
    Direct,
    /// Through a super node's relay.
    Relayed,
}

impl PathKind {
    /// The name used in JSON, the CLI and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::DirectLan => "direct-lan",
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
}

/// What one side knows about a node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Addresses supers observed (public side of its NAT).
    pub observed: Vec<SocketAddr>,
    /// Its own socket addresses (LAN side).
    pub local: Vec<SocketAddr>,
}

impl NodeAddrs {
    /// Every address, observed ones first, without duplicates.
    pub fn all(&self) -> Vec<SocketAddr> {
        dedup(self.observed.iter().chain(self.local.iter()).copied())
    }

    /// The public IPs it was seen from.
    pub fn public_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.observed.iter().map(SocketAddr::ip).collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// The dialing plan from `me` to `peer`: first the LAN addresses when both
/// were seen from the same public IP (same home or office NAT), then every
/// address for a coordinated punch. Duplicates are removed; order is the
/// order to try.
pub fn plan_dial(me: &NodeAddrs, peer: &NodeAddrs) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mine = me.public_ips();
    let same_nat = peer.public_ips().iter().any(|ip| mine.contains(ip));
    let lan: Vec<SocketAddr> = if same_nat {
        dedup(peer.local.iter().copied())
    } else {
        Vec::new()
    };
    let punch = dedup(peer.observed.iter().chain(peer.local.iter()).copied());
    (lan, punch)
}

fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !a.ip().is_unspecified() && a.port() != 0 && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn dial_plan_prefers_lan_behind_the_same_nat() {
        let me = NodeAddrs {
            observed: vec![a("1.2.3.4:6000")],
            local: vec![a("192.168.1.2:7100")],
        };
        let neighbour = NodeAddrs {
            observed: vec![a("1.2.3.4:6001")],
            local: vec![a("192.168.1.3:7100")],
        };
        let (lan, punch) = plan_dial(&me, &neighbour);
        assert_eq!(lan, vec![a("192.168.1.3:7100")]);
        assert_eq!(punch, vec![a("1.2.3.4:6001"), a("192.168.1.3:7100")]);
        let stranger = NodeAddrs {
            observed: vec![a("5.6.7.8:6000"), a("5.6.7.8:6000")],
            local: vec![a("10.0.0.9:7100"), a("0.0.0.0:7100")],
        };
        let (lan, punch) = plan_dial(&me, &stranger);
        assert!(lan.is_empty());
        assert_eq!(punch, vec![a("5.6.7.8:6000"), a("10.0.0.9:7100")]);
    }
}
