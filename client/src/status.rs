//! `adoptctl status [NAME…]`: one block per service, for reading at a
//! glance (with the last lines of its output, when the caller may read
//! them), or one JSON object per service and line.

use std::{collections::HashMap, fmt::Write as _};

use adoptd_dbus::{LoadState, ServiceResult, State};
use futures_util::future::{join, join_all};

use crate::{
    bus::Bus,
    error::Exit,
    procfs,
    properties::{self, ServiceStatus},
    render::{self, Style},
};

/// Shows the services `names` selects (every one when empty); the exit
/// status says whether all of the named ones run.
pub async fn run(bus: &Bus, names: &[String], json: bool, style: Style) -> Exit {
    // The output of services named plainly is asked for with their
    // properties, not after them: one round trip to adoptd, not two.
    let early_tails = !json && !names.is_empty() && !names.iter().any(|n| crate::glob::is_glob(n));
    let tails = async {
        if !early_tails {
            return HashMap::new();
        }
        let names: Vec<&String> = properties::dedup(names).collect();
        let tails = join_all(names.iter().map(|name| crate::logs::tail(bus, name, style))).await;
        names.into_iter().cloned().zip(tails).collect()
    };
    let statuses = async {
        if names.is_empty() {
            match properties::all(bus).await {
                Ok(services) => (services, Vec::new()),
                Err(failure) => (Vec::new(), vec![failure]),
            }
        } else {
            properties::selected(bus, names).await
        }
    };
    let ((services, failures), mut tails) = join(statuses, tails).await;
    let now = render::now_us();
    let mut text = String::new();
    for (index, status) in services.iter().enumerate() {
        if json {
            text.push_str(&crate::json_line(status));
        } else {
            if index > 0 {
                text.push('\n');
            }
            text.push_str(&block(status, now, style));
            let tail = match tails.remove(&status.name) {
                Some(tail) => tail,
                None => crate::logs::tail(bus, &status.name, style).await,
            };
            text.push_str(&tail);
        }
    }
    render::emit(&text);
    let mut exit = Exit::Success;
    if !names.is_empty() {
        for service in services.iter().filter(|s| s.state != State::Running) {
            // As systemctl: a unit whose file is gone and that does not
            // run is no such unit.
            exit = exit.max(if service.load_state == LoadState::NotFound {
                Exit::NoSuchService
            } else {
                Exit::NotRunning
            });
        }
    }
    for failure in failures {
        crate::report(&failure);
        exit = exit.max(failure.exit);
    }
    exit
}

/// The block of one service, as `systemctl status` lays it out: labels
/// right-aligned on a column, volatile values last on their line.
pub fn block(status: &ServiceStatus, now_us: u64, style: Style) -> String {
    let mut text = String::new();
    let dot = style.state(status.state, render::dot(status.state));
    let _ = write!(text, "{dot} {}", style.bold(&status.name));
    if !status.description.is_empty() {
        let _ = write!(text, " - {}", status.description);
    }
    text.push('\n');

    let mut state = style.state(status.state, status.state.as_str());
    if status.result != ServiceResult::Success
        && matches!(status.state, State::Failed | State::Restarting)
    {
        let _ = write!(state, " ({})", status.result);
    }
    if status.state_change_timestamp > 0 {
        let _ = write!(
            state,
            " since {}; {} ago",
            render::timestamp(status.state_change_timestamp),
            render::ago(status.state_change_timestamp, now_us)
        );
    }
    let loaded = match status.load_state {
        LoadState::Loaded => format!("loaded ({})", status.fragment_path),
        other => style.warn(&format!("{other} ({})", status.fragment_path)),
    };
    field(&mut text, "Loaded", &loaded);
    if !status.load_error.is_empty() {
        field(&mut text, "Error", &style.warn(&status.load_error));
    }
    if status.need_daemon_reload {
        field(
            &mut text,
            "Warning",
            "the service file changed on disk; run adoptctl daemon-reload",
        );
    }
    field(&mut text, "State", &state);
    if let Some(at) = status.reattached_timestamp.filter(|&at| at > 0) {
        field(
            &mut text,
            "Re-attached",
            &format!(
                "after adoptd restarted, since {}; {} ago (a run an earlier adoptd started)",
                render::timestamp(at),
                render::ago(at, now_us)
            ),
        );
    }
    if !status.status_text.is_empty() {
        field(&mut text, "Status", &format!("\"{}\"", status.status_text));
    }
    if !status.exec_error.is_empty() {
        field(&mut text, "Exec error", &style.warn(&status.exec_error));
    }
    if status.main_pid != 0 {
        let name = procfs::name(status.main_pid)
            .map(|name| format!(" ({name})"))
            .unwrap_or_default();
        field(
            &mut text,
            "Main PID",
            &format!("{}{name}, by {}", status.main_pid, status.main_pid_source),
        );
    }
    if status.previous_pid != 0 {
        field(&mut text, "Previous PID", &status.previous_pid.to_string());
    }
    field(
        &mut text,
        "Hand-offs",
        &format!("{}; restarts: {}", status.handoffs, status.restarts),
    );
    if let Some(exit) = render::last_exit(status.exit_code, status.exit_signal) {
        field(&mut text, "Last exit", &exit);
    }
    field(&mut text, "Command", &status.command.join(" "));
    if !status.chroot.is_empty() {
        field(&mut text, "Chroot", &status.chroot);
    }
    if !status.user.is_empty() {
        field(&mut text, "User", &status.user);
    }
    field(
        &mut text,
        "Policy",
        &format!("expect {}, restart {}", status.expect, status.restart),
    );
    if !status.pids.is_empty() {
        field(&mut text, "Processes", &status.pids.len().to_string());
        for line in procfs::tree(&status.pids, procfs::parent) {
            let command = procfs::command_line(line.pid).unwrap_or_default();
            let branches = procfs::branches(&line);
            let _ = writeln!(
                text,
                "{:>LABEL_WIDTH$}  {}{} {}",
                "",
                style.dim(&branches),
                line.pid,
                style.dim(&command)
            );
        }
    }
    text
}

/// The width of the label column.
const LABEL_WIDTH: usize = 13;

fn field(text: &mut String, label: &str, value: &str) {
    let _ = writeln!(text, "{label:>LABEL_WIDTH$}: {value}");
}
