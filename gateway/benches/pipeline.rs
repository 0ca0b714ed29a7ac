//! Placeholder; the real benchmark is written next.
fn main() {}
