//! The reference shop's business domains, built on the runtime's domain API.

/// Names of the domains this binary can run (`domains.enabled` must list only these).
pub const KNOWN: &[&str] = &["inventory"];
