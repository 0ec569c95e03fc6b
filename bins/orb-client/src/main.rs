//! orb-client.
fn main() {}
