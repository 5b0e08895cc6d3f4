//! adoptctl, the command-line client of adoptd.
//!
//! [`run`] connects to the bus that [`bus`] chooses and runs one command:
//! [`status`], [`list`], [`control`] (start, stop, restart, reload, kill,
//! reset-failed), [`query`] (is-active, is-failed, show, cat),
//! [`daemon_reload`], [`daemon_reexec`], [`monitor`] or [`logs`]; [`generate`] writes the man pages and completions. The
//! commands print their output themselves, report failures on stderr as
//! `adoptctl: …`, and return the exit status ([`error::Exit`]).
//!
//! Everything runs on a current-thread runtime: a one-shot command does
//! one or two round trips, and starting worker threads would cost more
//! than that.

pub mod cli;

mod bus;
mod control;
mod daemon_reexec;
mod daemon_reload;
pub mod error;
mod generate;
mod glob;
mod list;
mod logs;
mod monitor;
mod procfs;
mod properties;
mod query;
mod render;
mod status;

use cli::{Cli, Command};
use error::{Exit, Failure};

/// Runs the command of `cli` to its end; its exit status.
pub fn run(cli: &Cli) -> Exit {
    if let Command::Generate { what } = &cli.command {
        return generate::run(what).unwrap_or_else(|failure| {
            report(&failure);
            failure.exit
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&Failure::failed(format!("cannot start: {e}")));
            return Exit::Failure;
        }
    };
    runtime.block_on(run_command(cli))
}

async fn run_command(cli: &Cli) -> Exit {
    let bus = match bus::connect(cli).await {
        Ok(bus) => bus,
        Err(failure) => {
            report(&failure);
            return failure.exit;
        }
    };
    let style = render::Style::for_stdout();
    match &cli.command {
        Command::Status { names } => status::run(&bus, names, cli.json, style).await,
        Command::List {
            patterns,
            state,
            names,
        } => list::run(&bus, patterns, state.as_deref(), cli.json, *names, style).await,
        Command::Start(args) => {
            control::change(&bus, control::Action::Start, &args.names, args.no_block).await
        }
        Command::Stop(args) => {
            control::change(&bus, control::Action::Stop, &args.names, args.no_block).await
        }
        Command::Restart(args) => {
            control::change(&bus, control::Action::Restart, &args.names, args.no_block).await
        }
        Command::Reload { names } => control::reload(&bus, names).await,
        Command::Kill { signal, names } => control::kill(&bus, names, signal).await,
        Command::Monitor { names } => monitor::run(&bus, names, cli.json).await,
        Command::IsActive(args) => {
            query::is(&bus, &args.names, query::Question::Active, args.quiet).await
        }
        Command::IsFailed(args) => {
            query::is(&bus, &args.names, query::Question::Failed, args.quiet).await
        }
        Command::Show {
            property,
            value,
            names,
        } => query::show(&bus, names, property, *value, cli.json).await,
        Command::Cat { names } => query::cat(&bus, names).await,
        Command::ResetFailed { names } => control::reset_failed(&bus, names).await,
        Command::DaemonReload => daemon_reload::run(&bus).await,
        Command::DaemonReexec => daemon_reexec::run(&bus, cli).await,
        Command::Logs {
            lines,
            follow,
            name,
        } => logs::run(&bus, name, *lines, *follow, cli.json, style).await,
        Command::Generate { .. } => Exit::Success,
    }
}

/// Says `failure` on stderr.
pub(crate) fn report(failure: &Failure) {
    eprintln!("adoptctl: {failure}");
}

/// `value` as one line of JSON.
pub(crate) fn json_line(value: &impl serde::Serialize) -> String {
    let mut line = serde_json::to_string(value).unwrap_or_default();
    line.push('\n');
    line
}
