//! Unit tests over real AMD fixtures and simulated evidence.
