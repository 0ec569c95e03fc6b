//! What kind of NAT a node sits behind, from what supers observed.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How a NAT maps a node's one UDP socket to public addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NatMapping {
    /// Not enough observations to tell.
    Unknown,
    /// No NAT: the observed address is one of the node's own.
    None,
    /// Every destination sees the same public address and port: hole
    /// punching works with anyone who can reach that address.
    EndpointIndependent,
    /// Each destination sees a different port (symmetric NAT): direct
    /// paths are only possible when the other side is easy.
    EndpointDependent,
}

impl NatMapping {
    /// A stable lower-case name for JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NatMapping::Unknown => "unknown",
            NatMapping::None => "none",
            NatMapping::EndpointIndependent => "endpoint-independent",
            NatMapping::EndpointDependent => "endpoint-dependent",
        }
    }
}

/// Classify from the addresses that different supers observed for the same
/// local socket, and the node's own local addresses.
pub fn classify(local: &[SocketAddr], observed: &[SocketAddr]) -> NatMapping {
    let Some(first) = observed.first() else {
        return NatMapping::Unknown;
    };
    if observed.iter().all(|o| local.contains(o)) {
        return NatMapping::None;
    }
    if observed.len() < 2 {
        return NatMapping::Unknown;
    }
    if observed.iter().all(|o| o == first) {
        NatMapping::EndpointIndependent
    } else {
        NatMapping::EndpointDependent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn classification() {
        let local = [a("10.0.0.2:5000")];
        assert_eq!(classify(&local, &[]), NatMapping::Unknown);
        assert_eq!(
            classify(&local, &[a("10.0.0.2:5000"), a("10.0.0.2:5000")]),
            NatMapping::None
        );
        assert_eq!(classify(&local, &[a("1.2.3.4:6000")]), NatMapping::Unknown);
        assert_eq!(
            classify(&local, &[a("1.2.3.4:6000"), a("1.2.3.4:6000")]),
            NatMapping::EndpointIndependent
        );
        assert_eq!(
            classify(&local, &[a("1.2.3.4:6000"), a("1.2.3.4:6001")]),
            NatMapping::EndpointDependent
        );
    }
}
