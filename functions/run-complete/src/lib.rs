//! run-complete: takes Tekton's CloudEvents when a run finishes, archives the run's workspaces
//! and step logs to S3/MinIO (streamed, verified, manifest last) and frees the volume; the same
//! archive code restores a workspace, so object storage becomes the workspace of record.
//!
//! - [`verify`] takes only the run's name from the event (Tekton cannot sign it) and re-reads
//!   the run from the API server: same uid, finished, or the event is refused.
//! - [`tekton`] reads the facts archiving needs out of that run.
//! - [`plan`] decides which directories to archive and where each object goes.
//! - [`archive`] streams a directory to S3 and back.
//! - [`logs`] copies step logs from the pods/log API.
//! - [`s3_client`] builds the S3 client from the SDK's chain and the config file.
//! - [`manifest`] is the record written last; [`reply`] the event answered.
//! - [`app`] ties them into the HTTP function, [`archiving`] archives one verified run and
//!   [`outcome`] is the commit status it reports; [`dead_letters`] keeps what the Broker could
//!   not deliver, on the same Service.

pub mod app;
pub mod archive;
pub mod archiving;
pub mod dead_letters;
pub mod logs;
pub mod manifest;
pub mod outcome;
pub mod plan;
pub mod reply;
pub mod s3_client;
mod s3_http;
pub mod tekton;
pub mod verify;

pub use app::{AppState, app, routes_from_startup, served_namespaces};
pub use tekton::TERMINAL_TYPES;
