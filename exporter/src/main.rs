//! `adoptd-exporter`: parse the command line, listen, run until SIGTERM
//! or SIGINT.

use std::{net::SocketAddr, process::ExitCode};

use adoptd_dbus::BusChoice;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Export adoptd's services as Prometheus metrics.
///
/// adoptd-exporter follows adoptd over D-Bus, as any unprivileged user
/// may, and serves OpenMetrics at http://LISTEN/metrics: each service's
/// state, hand-offs, restarts, start time and how its main PID was learnt.
/// A scrape reads what the exporter already knows and never makes a bus
/// call; when adoptd or the bus goes away, adoptd_up is 0 until they are
/// back.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
#[command(group = clap::ArgGroup::new("bus").multiple(false))]
struct Cli {
    /// The address and port to serve the metrics on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9558")]
    listen: SocketAddr,

    /// Follow adoptd on the bus at this D-Bus address.
    ///
    /// Without --address, --system or --session: $ADOPTD_BUS_ADDRESS if
    /// set, else the system bus if adoptd is there, else adoptd's private
    /// bus, as adoptctl finds it.
    #[arg(long, value_name = "ADDR", group = "bus")]
    address: Option<String>,

    /// Follow adoptd on the system bus.
    #[arg(long, group = "bus")]
    system: bool,

    /// Follow adoptd on the session bus.
    #[arg(long, group = "bus")]
    session: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ADOPTD_EXPORTER_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let bus = match cli.address {
        Some(address) => BusChoice::Address(address),
        None if cli.system => BusChoice::System,
        None if cli.session => BusChoice::Session,
        None => BusChoice::Auto,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("adoptd-exporter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::bind(cli.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("adoptd-exporter: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %cli.listen, "serving /metrics");
        adoptd_exporter::run(bus, listener, shutdown()).await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
