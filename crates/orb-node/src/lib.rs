//! orb-node (placeholder).
