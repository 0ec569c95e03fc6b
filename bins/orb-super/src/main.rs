//! orb-super.
fn main() {}
