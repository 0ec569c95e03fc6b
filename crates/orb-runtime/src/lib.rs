//! orb-runtime (placeholder).
