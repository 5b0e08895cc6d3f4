//! adoptd-exporter: adoptd's services as Prometheus metrics.
//!
//! An unprivileged D-Bus client of adoptd ([`follow`]) keeps a [`view`]
//! of every service current from adoptd's signals; the HTTP side
//! ([`http`]) encodes it at each scrape ([`metrics`]), so a scrape never
//! makes a bus call, and adoptd itself has no network listener.

pub mod follow;
pub mod http;
pub mod metrics;
pub mod view;

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use adoptd_dbus::BusChoice;
use tokio::net::TcpListener;

/// Follows adoptd on `bus` and serves its metrics on `listener` until
/// `shutdown` completes.
pub async fn run(bus: BusChoice, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let view = Arc::new(Mutex::new(view::View::default()));
    let follower = tokio::task::spawn_local(follow::run(bus, view.clone()));
    http::serve(listener, view, shutdown).await;
    follower.abort();
}
