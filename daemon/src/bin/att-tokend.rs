//! `att-tokend`: the daemon (being written).

fn main() {}
