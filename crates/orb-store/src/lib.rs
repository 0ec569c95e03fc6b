//! orb-store (placeholder).
