//! Serving a router: over HTTP on `$PORT` with a bounded drain on SIGTERM, or through the
//! Lambda Runtime API.

use super::LAMBDA_RUNTIME_API;
use crate::config::ServerSettings;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// Why serving stopped with an error.
///
/// `main` prints it as one line, so the OS's words are in the message of [`ServeError::Bind`]
/// and [`ServeError::Io`] and not kept as a source as well (a chain would say them twice).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be listened on (in use, not this machine's, not allowed).
    #[error(
        "cannot listen on {address}: {}; stop what uses it, or choose another address with \
         --listen (or the port with PORT)",
        crate::error::plain_chain(error)
    )]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("the HTTP server stopped: {}", crate::error::plain_chain(.0))]
    Io(std::io::Error),
    /// The Lambda environment lacks a variable the runtime needs, or has an invalid one.
    #[error("Lambda environment variable {0} is missing or invalid")]
    LambdaEnvironment(&'static str),
    /// The Lambda runtime loop stopped (Runtime API unreachable or answering errors).
    #[error("Lambda runtime failed")]
    Lambda(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<std::io::Error> for ServeError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// A listening socket with the router attached, not yet serving.
///
/// Binding first lets callers (and tests with port 0) learn the address before serving.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    router: Router,
    drain: Duration,
}

/// Binds `settings.address:settings.port` (port 0 picks a free port).
pub async fn bind(router: Router, settings: &ServerSettings) -> Result<BoundServer, ServeError> {
    let address = SocketAddr::new(settings.address, settings.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| ServeError::Bind { address, error })?;
    Ok(BoundServer {
        listener,
        router,
        drain: Duration::from_secs(settings.shutdown_timeout_seconds),
    })
}

impl BoundServer {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// for at most `shutdown_timeout_seconds`, and returns.
    ///
    /// Requests still running when the drain time is up are abandoned; the caller is expected to
    /// exit, which ends them. Kubernetes kills the pod at the end of its grace period anyway, so
    /// returning first lets `main` exit cleanly instead of being killed mid-write.
    pub async fn run<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = signalled_tx.send(());
            })
            .into_future();
        tokio::pin!(serving);
        tokio::select! {
            result = &mut serving => return result,
            Ok(()) = signalled_rx => {}
        }
        tracing::info!(
            drain_seconds = self.drain.as_secs(),
            "shutting down: no new connections, draining in-flight requests"
        );
        match tokio::time::timeout(self.drain, serving).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    drain_seconds = self.drain.as_secs(),
                    "in-flight requests did not finish in time; abandoning them"
                );
                Ok(())
            }
        }
    }
}

/// Binds and serves until `shutdown` resolves, with the bounded drain of [`BoundServer::run`].
pub async fn serve<F>(
    router: Router,
    settings: &ServerSettings,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(bind(router, settings).await?.run(shutdown).await?)
}

/// Resolves on SIGTERM (what Kubernetes sends) or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// The one call a function's `main` makes to serve its router.
///
/// `env` looks up environment variables (`|name| std::env::var(name).ok()` in `main`). When
/// [`LAMBDA_RUNTIME_API`] is set and the crate is built with the `lambda` feature, the router is
/// served through the Lambda Runtime API; otherwise over HTTP on `settings.port` until SIGTERM or
/// ctrl-c.
pub async fn run(
    router: Router,
    settings: &ServerSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ServeError> {
    if env(LAMBDA_RUNTIME_API).is_some_and(|api| !api.trim().is_empty()) {
        #[cfg(feature = "lambda")]
        {
            return super::lambda::run(router, &env).await;
        }
        #[cfg(not(feature = "lambda"))]
        tracing::warn!(
            "{LAMBDA_RUNTIME_API} is set but this build lacks the `lambda` feature; serving HTTP"
        );
    }
    let server = bind(router, settings).await?;
    tracing::info!(address = %server.local_addr()?, "listening");
    server.run(shutdown_signal()).await?;
    Ok(())
}
