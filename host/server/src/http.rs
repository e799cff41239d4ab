//! The HTTP server: hyper over tokio, one function that turns errors into
//! responses, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::app::Service;
use crate::error::ApiError;

/// Time a client has to send its request headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// Serve until `shutdown` flips to true; in-flight requests finish first.
pub(crate) async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Reap finished connections so the set does not grow with every client ever seen.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
                };
                let service = service.clone();
                let stop = shutdown.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    match &service.tls {
                        Some(tls) => {
                            // The handshake gets the same deadline as request headers.
                            let acceptor = tls.acceptor.clone();
                            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => serve_connection(service, peer, stream, stop).await,
                                Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                                Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                            }
                        }
                        None => serve_connection(service, peer, stream, stop).await,
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// HTTP/1.1 over one accepted connection (TLS or, on loopback in simulation, plain).
async fn serve_connection<S>(
    service: Arc<Service>,
    peer: SocketAddr,
    stream: S,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = crate::api::router(service.clone());
    let svc = service_fn(move |req| handle(service.clone(), app.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!("connection from {peer}: {e}") },
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    service: Arc<Service>,
    app: axum::Router,
    _peer: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response<axum::body::Body>, Infallible> {
    use tower::ServiceExt as _;
    use tracing::Instrument as _;
    service.metrics.requests.inc();
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    // After a hand-over the upgraded image owns the state: this one changes nothing more.
    if req.method() != hyper::Method::GET
        && let Some(to) = service.handed_over.lock().expect("hand-over lock").clone()
    {
        let refused = ApiError::Busy(format!(
            "this enclave handed its state to the upgraded image {to}; use that one"
        ));
        return Ok(span.in_scope(|| axum::response::IntoResponse::into_response(refused)));
    }
    app.oneshot(req.map(axum::body::Body::new))
        .instrument(span)
        .await
}
