//! Cross-crate tests. One module per concern, each with a one-line purpose.

/// Dependency arrows point one way, and token-model stays pure.
mod architecture;
