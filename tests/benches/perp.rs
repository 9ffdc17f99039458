//! Benchmark of the perp plugin (to be written with its issue).

fn main() {}
