//! The HTTP side: `GET /metrics` answers the view's metrics, encoded
//! from memory; `/` says where they are; anything else is 404.
//!
//! Prometheus asks for OpenMetrics in its `Accept` header and gets it;
//! any other client gets the older text format, which every tool reads.
//!
//! Encoding 10,000 services takes a good part of a second, so it is done
//! on a thread of its own, outside the view's lock (on a copy: the
//! follower is never held up), and its text is kept for the next scrapes
//! until the view changes.

use std::{
    convert::Infallible,
    future::Future,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{follow::SharedView, metrics};

/// Serves `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, view: SharedView, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let cache = Cache::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: the next one may work.
                tracing::warn!("cannot accept a connection: {e}");
                continue;
            }
        };
        let view = view.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (view, cache) = (view.clone(), cache.clone());
                async move { Ok::<_, Infallible>(respond(request, view, cache).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// The OpenMetrics text of the last scrape, and the view's generation it
/// was made from.
type Cache = Arc<Mutex<Option<(u64, Bytes)>>>;

/// The current metrics as OpenMetrics text: the cached text if the view
/// has not changed since it was made, else a new one.
fn current_text(view: &SharedView, cache: &Cache) -> Option<Bytes> {
    let (generation, adoptd) = {
        let view = view.lock().ok()?;
        if let Ok(cached) = cache.lock()
            && let Some((made_from, text)) = cached.as_ref()
            && *made_from == view.generation
        {
            return Some(text.clone());
        }
        (view.generation, view.adoptd.clone())
    };
    let text = Bytes::from(metrics::encode_adoptd(adoptd.as_ref()));
    if let Ok(mut cached) = cache.lock() {
        *cached = Some((generation, text.clone()));
    }
    Some(text)
}

async fn respond(
    request: Request<Incoming>,
    view: SharedView,
    cache: Cache,
) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    match request.uri().path() {
        "/metrics" => {
            // Off the runtime's thread: the follower goes on reading signals.
            let made = tokio::task::spawn_blocking(move || current_text(&view, &cache)).await;
            let Ok(Some(body)) = made else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics\n",
                );
            };
            let openmetrics = request
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.contains("application/openmetrics-text"));
            let (body, content_type) = if openmetrics {
                (body, metrics::CONTENT_TYPE)
            } else {
                let classic = metrics::classic_text(&String::from_utf8_lossy(&body));
                (Bytes::from(classic), metrics::CLASSIC_CONTENT_TYPE)
            };
            let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/" => text(
            StatusCode::OK,
            "adoptd-exporter: the metrics of adoptd's services are at /metrics\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
