//! orb-nat (placeholder).
