//! `adoptctl list`: every service in one table sorted by name, or one JSON
//! array.
//!
//! Column widths come from all the rows before the first is printed, so a
//! table of thousands of services stays aligned. The table is written by
//! hand rather than with a table crate on purpose: `adoptctl list` has a
//! budget of 300 ms for 10,000 services (DESIGN.md, "Budgets"), and one
//! pass of widths and one `String` keeps it far inside it.

use std::fmt::Write as _;

use adoptd_dbus::{LoadState, ServiceRow, State};
use serde::Serialize;

use crate::{
    bus::Bus,
    error::Exit,
    properties,
    render::{self, Style},
};

/// One row, keyed in JSON by the D-Bus property names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Row<'a> {
    pub name: &'a str,
    pub state: State,
    #[serde(rename = "MainPID")]
    pub main_pid: u32,
    #[serde(rename = "PreviousPID")]
    pub previous_pid: u32,
    pub state_change_timestamp: u64,
    pub load_state: LoadState,
}

impl<'a> From<&'a ServiceRow> for Row<'a> {
    fn from(service: &'a ServiceRow) -> Self {
        Row {
            name: &service.name,
            state: service.state,
            main_pid: service.main_pid,
            previous_pid: service.previous_pid,
            state_change_timestamp: service.state_change_timestamp,
            load_state: service.load_state,
        }
    }
}

/// Lists the services whose name matches one of `patterns` (every one
/// when empty) and, with `state`, that are in it; with `names_only`, only
/// their names, one a line.
pub async fn run(
    bus: &Bus,
    patterns: &[String],
    state: Option<&str>,
    json: bool,
    names_only: bool,
    style: Style,
) -> Exit {
    // One `ListServices`: the rows carry every column, so no service's
    // other properties are asked for (at 10,000 services a
    // `GetManagedObjects` is megabytes to build, route and parse).
    let mut services = match properties::rows(bus).await {
        Ok(services) => services,
        Err(failure) => {
            crate::report(&failure);
            return failure.exit;
        }
    };
    services.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Row<'_>> = services
        .iter()
        .filter(|s| {
            patterns.is_empty() || patterns.iter().any(|p| crate::glob::matches(p, &s.name))
        })
        .filter(|s| state.is_none_or(|state| s.state.as_str() == state))
        .map(Row::from)
        .collect();
    let text = if names_only {
        rows.iter().map(|row| format!("{}\n", row.name)).collect()
    } else if json {
        let mut text = serde_json::to_string(&rows).unwrap_or_default();
        text.push('\n');
        text
    } else {
        table(&rows, render::now_us(), style)
    };
    render::emit(&text);
    Exit::Success
}

/// The aligned table, with a header.
pub fn table(rows: &[Row<'_>], now_us: u64, style: Style) -> String {
    const HEADER: [&str; 5] = ["NAME", "STATE", "MAIN PID", "PREVIOUS PID", "SINCE"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            [
                row.name.to_owned(),
                match row.load_state {
                    // A refused or vanished file shows beside the state.
                    LoadState::Loaded => row.state.as_str().to_owned(),
                    other => format!("{} ({other})", row.state),
                },
                pid(row.main_pid),
                pid(row.previous_pid),
                if row.state_change_timestamp == 0 {
                    "-".to_owned()
                } else {
                    format!("{} ago", render::ago(row.state_change_timestamp, now_us))
                },
            ]
        })
        .collect();
    let mut widths = HEADER.map(|title| title.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::with_capacity((cells.len() + 1) * (widths.iter().sum::<usize>() + 10));
    let header = line(&HEADER.map(str::to_owned), &widths, |_, cell| cell);
    let _ = writeln!(text, "{}", style.bold(header.trim_end()));
    for (row, cells) in rows.iter().zip(&cells) {
        // Coloured after padding, so escapes never shift a column.
        let padded = line(cells, &widths, |column, cell| {
            if column == 1 {
                style.state(row.state, &cell)
            } else {
                cell
            }
        });
        let _ = writeln!(text, "{}", padded.trim_end());
    }
    text
}

/// Cells padded to their widths, two spaces apart, numbers right-aligned;
/// `decorate` sees each padded cell by column.
fn line(
    cells: &[String; 5],
    widths: &[usize; 5],
    decorate: impl Fn(usize, String) -> String,
) -> String {
    let mut text = String::new();
    for (column, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        if column > 0 {
            text.push_str("  ");
        }
        let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
        let numeric = matches!(column, 2 | 3);
        let padded = if numeric {
            format!("{pad}{cell}")
        } else {
            format!("{cell}{pad}")
        };
        text.push_str(&decorate(column, padded));
    }
    text
}

fn pid(pid: u32) -> String {
    if pid == 0 {
        "-".to_owned()
    } else {
        pid.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: State, main_pid: u32) -> Row<'_> {
        Row {
            name,
            state,
            main_pid,
            previous_pid: 0,
            state_change_timestamp: 1_000_000,
            load_state: LoadState::Loaded,
        }
    }

    #[test]
    fn a_refused_file_shows_beside_the_state() {
        let mut refused = row("typo", State::Stopped, 0);
        refused.load_state = LoadState::BadSetting;
        let text = table(&[refused], 2_000_000, Style { colour: false });
        assert!(text.contains("stopped (bad-setting)"), "{text}");
    }

    #[test]
    fn columns_line_up_across_thousands_of_rows() {
        let names: Vec<String> = (0..5000).map(|i| format!("svc{i}")).collect();
        let rows: Vec<Row<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| row(name, State::Running, i as u32 * 37))
            .collect();
        let text = table(&rows, 62_000_000, Style { colour: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5001);
        let state_column = lines[0].find("STATE").expect("a STATE header");
        let since_column = lines[0].find("SINCE").expect("a SINCE header");
        for line in &lines[1..] {
            assert_eq!(line.find("running"), Some(state_column), "{line}");
            assert_eq!(line.find("1min 1s ago"), Some(since_column), "{line}");
        }
    }

    #[test]
    fn colour_does_not_move_columns() {
        let rows = [
            row("a", State::Failed, 0),
            row("bbbbbbbb", State::Running, 12),
        ];
        let plain = table(&rows, 2_000_000, Style { colour: false });
        let coloured = table(&rows, 2_000_000, Style { colour: true });
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }
}
