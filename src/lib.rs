//! Orb umbrella crate.
