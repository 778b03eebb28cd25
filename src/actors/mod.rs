//! Supervision and domain actors.
