//! The operations server: `/healthz` (process alive), `/readyz` (assigned and caught up),
//! `/metrics` (Prometheus text). Listens on a loopback address unless the operator configured
//! another one (the projector then logs that it listens beyond loopback).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Binds the server; returns the bound address (useful with port 0) and the serving future.
pub(crate) async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    };
    Ok((local, serve))
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let blockers = metrics.blockers();
    if metrics.is_ready() && blockers.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else if blockers.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not assigned yet or lagging behind\n".to_owned(),
        )
    } else {
        let mut body = String::from("not ready:\n");
        for line in blockers {
            body.push_str(&line);
            body.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
