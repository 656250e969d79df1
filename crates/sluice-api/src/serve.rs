//! The listener of the API (and of the metrics endpoint): a cap on open connections, a
//! deadline for a request's headers and one for the whole request. Plain `axum::serve` has
//! none of the three, so a few thousand slow or idle clients could hold every file descriptor
//! of the process — the worker slots beside the API then cannot open lake or result files.
//! Past the cap, connections wait in the kernel's accept queue, costing the process nothing.

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// A client must have sent a request's headers this long after it began (or after the
    /// connection went idle); otherwise the connection is closed.
    pub header_timeout: Duration,
    /// A request answered no later than this (503 past it).
    pub request_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (at most `request_timeout` more).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let deadline = cfg.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| within(deadline, req, next),
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap nothing more is accepted.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that stalls or hangs up is its own problem, not the server's.
            let _ = conn.await;
            drop(permit);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(cfg.request_timeout) => {}
    }
}

/// Answers 503 to a request still running after `deadline`.
async fn within(deadline: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            crate::ApiError::Unavailable(format!("the request took over {}s", deadline.as_secs()))
                .into_response()
        }
    }
}
