//! Benchmark of the dag plugin (to be written with its issue).

fn main() {}
