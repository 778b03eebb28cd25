//! The reference shop's business domains, written against [`crate::domain::Domain`] and
//! importing none of actix, Redis or diesel.

pub mod customers;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod reservations;
