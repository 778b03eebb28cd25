//! The reference shop's business domains, written against [`crate::domain::Domain`] and
//! importing none of actix, Redis or diesel.

pub mod inventory;

/// Names of the domains this binary can run (`domains.enabled` must list only these).
pub const KNOWN: &[&str] = &["inventory"];
