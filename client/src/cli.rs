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
/// reload and kill need root, or the polkit action org.adoptd1.manage;
/// a service's output (logs, and the tail status shows) needs root, or
/// the polkit action org.adoptd1.read-output.
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
    /// selects several. Each block ends with the service's last ten lines
    /// of output when the caller may read them (see logs). Exits 0 when every named service runs, 3 when one
    /// does not, 4 when one does not exist (or a glob matches nothing).
    ///
    /// With --json, one object per service, one per line.
    Status {
        /// Services to show: names or globs (*, ?, [abc]).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },

    /// List services in one table sorted by name: every one, or those
    /// whose name matches a PATTERN (a glob such as apache2@*), or whose
    /// state is STATE.
    ///
    /// With --json, one array of objects.
    List {
        /// Names or globs (*, ?, [abc]) of the services to list.
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,

        /// Only services in this state.
        #[arg(long, value_name = "STATE", value_parser = ["stopped", "starting", "running", "stopping", "restarting", "failed"])]
        state: Option<String>,

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

    /// Say whether services are running: print each one's state; exit 0
    /// when at least one runs, else 3 (4 when a name is no service).
    IsActive(Question),

    /// Say whether services have failed: print each one's state; exit 0
    /// when at least one has failed, else 1.
    IsFailed(Question),

    /// Print services' properties as Name=Value lines, sorted by name, as
    /// `systemctl show` does (strings bare, booleans yes/no, lists
    /// space-separated). With --json, one object per service and line.
    Show {
        /// Only these properties (repeatable), such as -p MainPID.
        #[arg(long, short, value_name = "PROP")]
        property: Vec<String>,

        /// Print only the values, one per line.
        #[arg(long)]
        value: bool,

        /// Services to show.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Print the service file of services, each after a "# PATH" line.
    Cat {
        /// Services whose file to print.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Make failed services stopped and clear their start-limit count, so
    /// that a start is counted afresh.
    ResetFailed {
        /// Services to reset.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Re-read adoptd's configuration directory and say what changed:
    /// services added, removed, changed, and files refused (exit 1 when
    /// any was; the others are loaded all the same).
    DaemonReload,

    /// Re-execute adoptd in place, as after an upgrade of its binary: it
    /// keeps its pid and every service, and comes back on the bus with
    /// every service as it was. Waits until it is back.
    DaemonReexec,

    /// Show the latest lines a service wrote to stdout and stderr.
    ///
    /// adoptd keeps the latest output of each service with
    /// output = "log" in memory (output-buffer, 64KiB unless its file
    /// says otherwise); each line is printed as TIME STREAM LINE, the
    /// time local to the millisecond, STREAM stdout or stderr. Bytes that
    /// were not UTF-8 show as \xNN, and a line longer than 4096 bytes was
    /// cut and ends in " [cut]". With --json, one object per line:
    /// {"realtime":µs since the epoch,"stream":"stdout","line":"…"}.
    ///
    /// Output may hold secrets: reading it needs root, or the polkit
    /// action org.adoptd1.read-output (exit 1 otherwise). Exits 4 when
    /// there is no such service.
    Logs {
        /// Show this many of the latest lines (0: none, e.g. with -f).
        #[arg(long = "lines", short = 'n', value_name = "N", default_value_t = 10)]
        lines: u32,

        /// Then print each new line as the service writes it, until
        /// interrupted; exits 1 when adoptd ends the stream (it stopped,
        /// the service was removed, or adoptctl read too slowly).
        #[arg(long, short)]
        follow: bool,

        /// The service.
        #[arg(value_name = "NAME")]
        name: String,
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

/// The arguments of is-active and is-failed.
#[derive(Debug, Args)]
pub struct Question {
    /// Print nothing; only the exit status answers.
    #[arg(long, short)]
    pub quiet: bool,

    /// Services to ask about.
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
