//! Benchmark of the spot plugin (to be written with its issue).

fn main() {}
