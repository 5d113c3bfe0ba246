//! Test harness with real parts, shared by every crate's tests, and home of the cross-function
//! integration tests (under `tests/tests/`).
//!
//! - [`s3`]: real S3 servers that enforce SigV4: `s3s` + `s3s-fs` in-process for `cargo test`, and a
//!   SeaweedFS instance (started by `.ci/run`) for the integration tier.
//! - [`kube_api`]: a small Kubernetes API server over HTTP on loopback, driven by the real
//!   `kube::Client`, that validates Tekton and Flux objects against the upstream CRD schemas ([`crd`]).
//! - [`git_status`]: a git provider's commit-status API (GitHub, GitLab, Gitea, Bitbucket) that
//!   checks requests as the provider does and plays its error answers.
//! - [`fault_proxy`]: an HTTP proxy that fails chosen requests (S3 failing mid-upload).
//! - [`lambda_runtime`]: an AWS Lambda Runtime API emulator, to serve the Router through `lambda_http`.
//! - [`oidc`]: a service-account issuer of its own that signs Knative-style sender tokens.
//! - [`cdevents`]: the CDEvents CloudEvents binding and JSON schemas, checked on replies.
//! - [`push`]: a chainable builder of git-push's normalized push, for tests.
//! - [`corpus`]: where the shared corpus of real payloads and schemas is.
//! - [`kustomize`]: the shipped kustomizations rendered as `kubectl kustomize` renders them.
//! - [`request_log`]: the Kubernetes requests of a whole test run, on disk, and the RBAC verb each
//!   needs (for the test that holds the shipped Roles to what the functions call).

pub mod answer;
pub mod binary;
pub mod cdevents;
pub mod corpus;
pub mod crd;
pub mod fault_proxy;
pub mod git_status;
pub mod jwt;
pub mod kube_api;
pub mod kustomize;
pub mod lambda_runtime;
pub mod load;
pub mod machine;
pub mod oidc;
pub mod push;
pub mod request_log;
pub mod s3;
pub mod tree;
