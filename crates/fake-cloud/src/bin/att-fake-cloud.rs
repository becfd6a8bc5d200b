//! `att-fake-cloud`: runs the fake AllThingsTalk cloud (being written).

fn main() {}
