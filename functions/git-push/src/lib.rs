//! git-push: turns git providers' push webhooks into Tekton PipelineRuns and TaskRuns, exactly
//! once per delivery.

pub mod providers;
pub mod push;

pub use push::{Provider, Push, RefKind};
