//! The command line: every option and subcommand, as clap defines them.
//!
//! This definition is also the source of the man page and the shell
//! completions (`adoptctl generate`), so what `--help` says is what they
//! say.

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Control and inspect the services of adoptd.
///
/// adoptctl talks to adoptd over D-Bus (bus name org.adoptd1). Reading
/// (status, list, monitor) is open to every user; start, stop, restart,
/// reload and kill need root, or the polkit action org.adoptd1.manage.
///
/// Exit status: 0 on success (for status: every named service is
/// running), 1 on failure, 2 on a usage error, 3 when a named service is
/// not running, 4 when there is no such service.
#[derive(Debug, Parser)]
#[command(name = "adoptctl", version, about, long_about)]
#[command(group = ArgGroup::new("bus").multiple(false))]
pub struct Cli {
    /// Talk to adoptd on the bus at this D-Bus address, such as
    /// unix:path=/run/adoptd/bus.
    ///
    /// Without --address, --system or --session: $ADOPTD_BUS_ADDRESS if
    /// set, else the system bus if adoptd is there, else adoptd's private
    /// bus ($ADOPTD_RUNTIME_DIR/bus if set, else /run/adoptd/bus for root,
    /// $XDG_RUNTIME_DIR/adoptd/bus otherwise).
    #[arg(long, value_name = "ADDR", group = "bus", global = true)]
    pub address: Option<String>,

    /// Talk to adoptd on the system bus.
    #[arg(long, group = "bus", global = true)]
    pub system: bool,

    /// Talk to adoptd on the session bus of the user.
    #[arg(long, group = "bus", global = true)]
    pub session: bool,

    /// Print JSON whose keys are the D-Bus property names (Name, State,
    /// MainPID, PreviousPID, …) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// What adoptctl is asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state of services, one block each.
    ///
    /// Without NAME, every service. A NAME may be a glob (apache2@*) that
    /// selects several. Exits 0 when every named service runs, 3 when one
    /// does not, 4 when one does not exist (or a glob matches nothing).
    ///
    /// With --json, one object per service, one per line.
    Status {
        /// Services to show: names or globs (*, ?, [abc]).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },

    /// List every service in one table sorted by name.
    ///
    /// With --json, one array of objects.
    List {
        /// Print only the names, one a line: what the shell completions
        /// ask for.
        #[arg(long, hide = true, conflicts_with = "json")]
        names: bool,
    },

    /// Start services and wait until they run.
    ///
    /// A template instance (apache2@chroot3) is created on demand. A
    /// service that already runs is left alone.
    Start(Control),

    /// Stop services and wait until they have stopped.
    ///
    /// A stopped service is not restarted; one that is not running is left
    /// alone.
    Stop(Control),

    /// Stop services if they run, then start them, and wait until they run.
    Restart(Control),

    /// Send each service's reload signal (SIGHUP unless configured) to its
    /// main process.
    Reload {
        /// Services to reload.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Send a signal to the main process of services.
    Kill {
        /// The signal, by name (TERM, SIGTERM) or number.
        #[arg(long, short, value_name = "SIG", default_value = "TERM")]
        signal: String,

        /// Services to signal.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Print events as they happen, one line each, until interrupted.
    ///
    /// State changes, hand-offs of the main process (Adopted 1234 <- 1233),
    /// exits of the main process, services added and removed. Without
    /// NAME, of every service; a NAME may be a glob. With --json, one
    /// object per line.
    Monitor {
        /// Services to follow: names or globs.
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },

    /// Write the man page or shell completions to stdout.
    ///
    /// adoptctl generate man > adoptctl.1;
    /// adoptctl generate completions bash > /usr/share/bash-completion/completions/adoptctl
    /// (zsh: _adoptctl in a directory of $fpath; fish: adoptctl.fish in
    /// vendor_completions.d). The completions of bash, zsh and fish also
    /// complete the names of the services adoptd has.
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

/// The arguments of start, stop and restart.
#[derive(Debug, Args)]
pub struct Control {
    /// Do not wait: return once adoptd has accepted the request.
    #[arg(long)]
    pub no_block: bool,

    /// Services to act on.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// What `adoptctl generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// The man page adoptctl(1), in roff.
    Man,
    /// Completions for a shell.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}
