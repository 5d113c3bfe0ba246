//! git-push: turns git providers' push webhooks into Tekton PipelineRuns and TaskRuns, exactly
//! once per delivery.

pub mod app;
pub mod error;
pub mod path_capture;
pub mod providers;
pub mod push;
pub mod repo_url;
pub mod routing;
pub mod run;
pub mod signature;
pub mod template;

pub use app::{
    AppState, app, render, routes_from_startup, webhook_app, webhook_routes_from_startup,
};
pub use push::{Provider, Push, RefKind};
pub use routing::{CompiledRule, Miss, Routing, RoutingTable, RuleDecision, RuleError};
pub use run::{BuildError, RunContext, RunKind, build_run};
pub use template::{Template, TemplateError};
