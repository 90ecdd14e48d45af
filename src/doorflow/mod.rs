//! Speaking DoorFlow API v3: typed models faithful to the published spec, one error type that
//! classifies every outcome per the retry table, and the shared client-side rate budget.

pub mod body;
pub mod client;
pub mod error;
pub mod models;
pub mod operation;
pub mod ratelimit;
