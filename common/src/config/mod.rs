//! The one config file: loading, validation, secrets and environment overrides.

mod model;
mod secret;

pub use model::*;
pub use secret::Secret;
