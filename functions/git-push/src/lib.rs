//! git-push: turns git providers' push webhooks into Tekton PipelineRuns and TaskRuns, exactly
//! once per delivery.
//!
//! A request goes through the modules in this order: the handlers (`handlers`, routed by
//! [`app()`]) check and read it ([`signature`], [`providers`] into [`Push`]es), [`plan`] decides
//! purely what it starts ([`routing`] over the compiled [`rule`]s, [`run`] builds each run),
//! `apply` carries the plan out (`cluster` creates and supersedes, commit statuses are reported),
//! and the answer is a [`summary`] (or, for a CloudEvent, the CDEvents reply of `reply`).
//! `tekflux render` shows a plan offline ([`render()`]); [`startup`] builds the routes a `main`
//! serves.

pub mod app;
mod apply;
mod cluster;
pub mod error;
mod handlers;
pub mod labels;
mod metrics;
pub mod path_capture;
mod patterns;
pub mod plan;
pub mod providers;
pub mod push;
pub mod render;
mod reply;
pub mod repo_url;
pub mod routing;
pub mod rule;
pub mod run;
pub mod signature;
pub mod startup;
pub mod summary;
pub mod template;

pub use app::{AppState, app, webhook_app};
pub use error::{DeliveryError, StartupError};
pub use plan::{Plan, Planner};
pub use push::{Provider, Push, RefKind};
pub use render::render;
pub use routing::{Miss, Routing, RoutingTable, RuleDecision};
pub use rule::{CompiledRule, RuleError};
pub use run::{BuildError, RunContext, RunKind, build_run};
pub use startup::{routes_from_startup, webhook_routes_from_startup};
pub use template::{Template, TemplateError};
