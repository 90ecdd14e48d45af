//! doorflow-agent: a door-controller agent for DoorFlow. See ARCHITECTURE.md for the map.

pub mod access;
pub mod admin;
pub mod agent;
pub mod config;
pub mod credential;
pub mod door;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod telemetry;
