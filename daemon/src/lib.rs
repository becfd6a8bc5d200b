//! att-tokend: keeps AllThingsTalk tokens alive and serves them over D-Bus (being written).
