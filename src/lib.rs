//! doorflow-agent: a door-controller agent for DoorFlow. See ARCHITECTURE.md for the map.

pub mod access;
pub mod admin;
pub mod agent;
pub mod audit;
pub mod audit_writer;
pub mod config;
pub mod credential;
pub mod demo;
pub mod door;
pub mod door_task;
pub mod doorflow;
pub mod hw;
pub mod secrets;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod sync;
pub mod telemetry;
pub mod uplink;
