//! Support code shared by the cross-crate tests in `it/`.
