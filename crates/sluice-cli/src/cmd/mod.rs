//! One module per verb group, each owning its clap arguments and its `run`.

pub mod admin;
pub mod demo;
pub mod jobs;
pub mod lab;
pub mod ops;
pub mod provider;
pub mod schedules;
pub mod serve;
