//! The cross-cutting runtime shared by every tekflux function.
//!
//! Domain logic lives with the function that owns it; this crate only holds what every function
//! needs in the same shape: the one config file, CloudEvents in and out, the error → HTTP status
//! mapping that Knative's retry rules call for, the server scaffolding (health, metrics, tracing,
//! body limit, graceful shutdown, AWS Lambda), the provider table, construction of the Kubernetes
//! client (the S3 client is built in run-complete, the only function that uses S3), and the
//! commit-status client that git-push and run-complete both report through.

pub mod clients;
pub mod cloudevent;
pub mod commit_status;
pub mod config;
pub mod environment;
pub mod error;
pub mod jwt;
pub mod metrics;
pub mod provider;
pub mod run_contract;
pub mod sender;
pub mod server;
pub mod startup;
pub mod telemetry;
pub mod webhook_auth;

pub use config::Config;
pub use error::{Error, Result};
