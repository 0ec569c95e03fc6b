//! When a client that misses health pings is given up.
//!
//! Supers ping every client each second; a client that misses
//! [`MISSES`] pings in a row has its tunnel closed, so its replicas leave
//! the provider set within seconds rather than after QUIC's idle timeout.
//! Pongs come from the client's async side, never from behind a running
//! function, so a busy replica is not mistaken for a dead one.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Missed pings in a row after which a peer is given up.
pub const MISSES: u32 = 2;

/// Missed pings per peer (a peer is a connection: a reconnect is a new one).
#[derive(Debug)]
pub struct Health<K> {
    misses: HashMap<K, u32>,
}

impl<K: Eq + Hash + Clone> Default for Health<K> {
    fn default() -> Self {
        Health {
            misses: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Health<K> {
    /// One round of pings: `results` says which peers answered. Returns the
    /// peers to give up. Peers not pinged this round are forgotten, so the
    /// table never holds more than the peers of one round.
    pub fn round(&mut self, results: &[(K, bool)]) -> Vec<K> {
        let mut give_up = Vec::new();
        let seen: HashSet<&K> = results.iter().map(|(k, _)| k).collect();
        self.misses.retain(|k, _| seen.contains(k));
        for (k, ok) in results {
            if *ok {
                self.misses.remove(k);
                continue;
            }
            let n = self.misses.entry(k.clone()).or_insert(0);
            *n += 1;
            if *n >= MISSES {
                self.misses.remove(k);
                give_up.push(k.clone());
            }
        }
        give_up
    }

    /// Missed pings in a row of `k` now.
    pub fn misses(&self, k: &K) -> u32 {
        self.misses.get(k).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_misses_in_a_row_give_up() {
        let mut h = Health::default();
        assert!(h.round(&[("a", false), ("b", true)]).is_empty());
        assert_eq!(h.misses(&"a"), 1);
        assert_eq!(h.round(&[("a", false), ("b", true)]), vec!["a"]);
        assert_eq!(h.misses(&"a"), 0);
    }

    #[test]
    fn an_answer_resets_the_count() {
        let mut h = Health::default();
        h.round(&[("a", false)]);
        h.round(&[("a", true)]);
        assert!(h.round(&[("a", false)]).is_empty());
    }

    #[test]
    fn peers_that_left_are_forgotten() {
        let mut h = Health::default();
        h.round(&[("a", false), ("b", false)]);
        h.round(&[("b", true)]);
        assert_eq!(h.misses(&"a"), 0);
        assert!(h.round(&[("a", false)]).is_empty());
    }
}
