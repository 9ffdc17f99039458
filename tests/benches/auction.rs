//! Benchmark of the auction plugin (to be written with its issue).

fn main() {}
