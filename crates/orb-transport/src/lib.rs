//! orb-transport (placeholder).
