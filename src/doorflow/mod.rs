//! Speaking DoorFlow API v3: typed models faithful to the published spec, one error type that
//! classifies every outcome per the retry table, the shared client-side rate budget, lists
//! followed to the end the server's totals give (`paging`) and read with a size limit, parsed as
//! they arrive (`body`).

pub mod body;
pub mod client;
pub mod error;
pub mod models;
pub mod operation;
pub mod paging;
pub mod ratelimit;
