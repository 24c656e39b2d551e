//! The `nearcast` command line.
fn main() {}
