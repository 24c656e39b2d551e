//! Whole-pipeline benchmark (to be filled in with the pipeline).
fn main() {}
