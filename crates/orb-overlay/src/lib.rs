//! orb-overlay (placeholder).
