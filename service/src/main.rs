//! `adoptd`: parse the command line, set up logging and signals, run.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A supervisor that follows every daemon to its real main process.
///
/// adoptd starts the services described by the TOML files of its
/// configuration directory and keeps knowing which process is each
/// service's main process, however the service forks and exits to
/// daemonize: no pid file and no fork count needed. It runs as init
/// (PID 1) or as a child subreaper under another init.
///
/// SIGTERM or SIGINT stops every service and exits; SIGHUP re-reads the
/// configuration directory.
///
/// Every service is published on D-Bus as org.adoptd1 (see busctl(1):
/// `busctl tree org.adoptd1`), by default on the system bus. A bus that is
/// not there yet, or that goes away, is retried with back-off: supervision
/// never depends on it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
#[command(group = clap::ArgGroup::new("bus").multiple(false))]
struct Cli {
    /// Publish on the system bus (the default). Owning org.adoptd1 there
    /// takes root and the policy file org.adoptd1.conf.
    #[arg(long, group = "bus")]
    system: bool,

    /// Publish on the session bus of the user ($DBUS_SESSION_BUS_ADDRESS).
    #[arg(long, group = "bus")]
    session: bool,

    /// Publish on the bus at this D-Bus address, such as
    /// unix:path=/run/dbus/system_bus_socket.
    #[arg(long, value_name = "ADDR", group = "bus")]
    address: Option<String>,

    /// Start a bus of adoptd's own and publish there: no dbus-daemon and no
    /// configuration needed.
    ///
    /// Its socket is /run/adoptd/bus for root and
    /// $XDG_RUNTIME_DIR/adoptd/bus for other users, in a directory only
    /// adoptd's user may enter ($ADOPTD_RUNTIME_DIR/bus when that variable
    /// names an absolute directory: for a second adoptd beside the real
    /// one). adoptd prints its address on stdout as one line,
    /// ADOPTD_BUS_ADDRESS=unix:path=…, ready for a shell's eval.
    #[arg(long, group = "bus")]
    private_bus: bool,

    /// Directory of service files (NAME.toml, and NAME@.toml templates).
    ///
    /// Default: /etc/adoptd/services for root, otherwise
    /// $XDG_CONFIG_HOME/adoptd/services (~/.config/adoptd/services).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,

    /// Directory of the record of what adoptd runs, from which an adoptd
    /// started after a crash re-attaches the services still running
    /// instead of starting them twice.
    ///
    /// Default: $ADOPTD_RUNTIME_DIR when that names an absolute directory,
    /// else /run/adoptd for root and $XDG_RUNTIME_DIR/adoptd for other
    /// users. Two adoptds must not share one.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// How adoptd learns that a process was reparented to it.
    ///
    /// auto takes the first that works of adoptsig (a kernel with
    /// kernel-patch/'s waitid(WADOPTED)), proc-connector (CAP_NET_ADMIN)
    /// and procfs (any kernel, any user).
    #[arg(long, value_name = "TRACKER", default_value = "auto", value_parser = ["auto", "adoptsig", "proc-connector", "procfs"])]
    tracker: String,

    /// Log level (error, warn, info, debug, trace) or a tracing filter
    /// such as "info,adoptd::output=warn". Overrides $ADOPTD_LOG.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    adoptd::memory::map_large_allocations();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref()) {
        eprintln!("adoptd: {e}");
        return ExitCode::from(2);
    }
    let bus = if cli.session {
        adoptd::BusChoice::Session
    } else if let Some(address) = cli.address {
        adoptd::BusChoice::Address(address)
    } else if cli.private_bus {
        adoptd::BusChoice::Private
    } else {
        adoptd::BusChoice::System
    };
    let options = adoptd::Options {
        bus,
        config_dir: cli.config_dir.unwrap_or_else(default_config_dir),
        state_dir: cli.state_dir.or_else(adoptd::reattach::default_state_dir),
        source: match cli.tracker.parse() {
            Ok(choice) => choice,
            Err(e) => {
                eprintln!("adoptd: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = adoptd::reaper::block_signals() {
        eprintln!("adoptd: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("adoptd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(adoptd::run(options, std::future::pending()));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", adoptd::errors::chain(&e));
            ExitCode::FAILURE
        }
    };
    if std::process::id() == 1 && adoptd::proc::in_initial_pid_namespace() {
        power_off();
    }
    code
}

fn init_logging(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?}: {e}"))?
        }
        None => EnvFilter::try_from_env("ADOPTD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| adoptd::logging::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

fn default_config_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/etc/adoptd/services");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("adoptd/services")
}

/// The machine's init must never exit: sync and power off instead.
fn power_off() -> ! {
    tracing::info!("powering off");
    nix::unistd::sync();
    loop {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        tracing::error!("cannot power off: {e}");
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
