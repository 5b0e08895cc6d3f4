//! `adoptctl logs [-n N] [-f] NAME`: a service's latest output lines, and
//! with `-f` each new one as adoptd reads it; and the tail that
//! `adoptctl status` shows.
//!
//! Following asks for the stream (`FollowOutput`) before the latest lines
//! (`GetOutput`), so no line falls between the two; a line that comes in
//! both is printed once.

use std::fmt::Write as _;

use adoptd_dbus::{
    Error as BusError, OutputLine, POLKIT_READ_OUTPUT_ACTION, ServiceProxy, service_path,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use zbus::proxy::CacheProperties;

use crate::{
    bus::Bus,
    error::{Exit, Failure},
    render::{self, Style},
};

/// One output line, as `FollowOutput` writes it and `--json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    realtime: u64,
    stream: String,
    line: String,
}

impl From<OutputLine> for Line {
    fn from((realtime, stream, line): OutputLine) -> Line {
        Line {
            realtime,
            stream,
            line,
        }
    }
}

/// Prints `name`'s latest `lines` lines, then, with `follow`, each new
/// one until adoptd ends the stream or adoptctl is interrupted.
pub async fn run(
    bus: &Bus,
    name: &str,
    lines: u32,
    follow: bool,
    json: bool,
    style: Style,
) -> Exit {
    match show(bus, name, lines, follow, json, style).await {
        Ok(exit) => exit,
        Err(failure) => {
            crate::report(&failure);
            failure.exit
        }
    }
}

/// The last ten lines of `name`'s output for `adoptctl status`, indented
/// under its block: nothing when it printed nothing, one hint line when
/// the caller may not read it, nothing either when it cannot be read.
pub async fn tail(bus: &Bus, name: &str, style: Style) -> String {
    let Ok(service) = proxy(bus, name).await else {
        return String::new();
    };
    match service.get_output(10).await {
        Ok(lines) if lines.is_empty() => String::new(),
        Ok(lines) => {
            let mut text = String::from("\n");
            for line in lines {
                text.push_str(&plain(&Line::from(line), style));
            }
            text
        }
        Err(error) if error.is_access_denied() => format!(
            "{:>13}: {}\n",
            "Output",
            style.dim(&format!(
                "hidden; root, or polkit's {POLKIT_READ_OUTPUT_ACTION}, may read it"
            ))
        ),
        Err(_) => String::new(),
    }
}

async fn show(
    bus: &Bus,
    name: &str,
    count: u32,
    follow: bool,
    json: bool,
    style: Style,
) -> Result<Exit, Failure> {
    let failure = |error: &BusError| refusal(name, bus, error);
    let service = proxy(bus, name)
        .await
        .map_err(|e| Failure::from_zbus(Some(name), &bus.name, &e))?;
    let stream = if follow {
        Some(service.follow_output().await.map_err(|e| failure(&e))?)
    } else {
        None
    };
    let latest: Vec<Line> = if count == 0 {
        Vec::new()
    } else {
        let lines = service.get_output(count).await.map_err(|e| failure(&e))?;
        lines.into_iter().map(Line::from).collect()
    };
    let print = |line: &Line| {
        if json {
            render::emit(&crate::json_line(line))
        } else {
            render::emit(&plain(line, style))
        }
    };
    let mut text = String::new();
    for line in &latest {
        if json {
            text.push_str(&crate::json_line(line));
        } else {
            text.push_str(&plain(line, style));
        }
    }
    if !render::emit(&text) {
        return Ok(Exit::Success);
    }
    let Some(stream) = stream else {
        return Ok(Exit::Success);
    };
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stream.into())
        .map_err(|e| Failure::failed(format!("{name}: cannot read the output stream: {e}")))?;
    let mut lines = tokio::io::BufReader::new(pipe).lines();
    // The newest line printed, and those printed with its time: a line of
    // the stream no newer than these was printed already.
    let newest = latest.last().map_or(0, |line| line.realtime);
    let mut printed_at_newest: Vec<Line> = latest
        .into_iter()
        .filter(|line| line.realtime == newest)
        .collect();
    loop {
        match lines.next_line().await {
            Ok(Some(text)) => {
                let Ok(line) = serde_json::from_str::<Line>(&text) else {
                    return Err(Failure::failed(format!(
                        "{name}: cannot read adoptd's output stream (is adoptctl as new as adoptd?): {text}"
                    )));
                };
                if line.realtime < newest
                    || (line.realtime == newest && printed_at_newest.contains(&line))
                {
                    continue;
                }
                printed_at_newest.clear();
                if !print(&line) {
                    return Ok(Exit::Success);
                }
            }
            Ok(None) => {
                return Err(Failure::failed(format!(
                    "{name}: adoptd ended the output stream (it stopped, the service was removed, or adoptctl fell behind)"
                )));
            }
            Err(e) => {
                return Err(Failure::failed(format!(
                    "{name}: cannot read the output stream: {e}"
                )));
            }
        }
    }
}

async fn proxy<'a>(bus: &'a Bus, name: &str) -> zbus::Result<ServiceProxy<'a>> {
    ServiceProxy::builder(&bus.connection)
        .path(service_path(name))
        .cache_properties(CacheProperties::No)
        .build()
        .await
}

/// What a refused or failed output call tells the user.
fn refusal(name: &str, bus: &Bus, error: &BusError) -> Failure {
    if error.is_access_denied() {
        return Failure::failed(format!(
            "{name}: permission denied: a service's output may hold secrets; run adoptctl as root (or allow {POLKIT_READ_OUTPUT_ACTION} in polkit)"
        ));
    }
    Failure::from_bus(Some(name), &bus.name, error)
}

/// `2026-05-01 12:00:03.250 stdout the line`, stderr's stream in bold.
fn plain(line: &Line, style: Style) -> String {
    let mut text = String::with_capacity(line.line.len() + 40);
    let stream = if line.stream == "stderr" {
        style.bold(&line.stream)
    } else {
        line.stream.clone()
    };
    let _ = write!(
        text,
        "{} {stream} ",
        style.dim(&render::line_time(line.realtime))
    );
    // A service's output must not drive the terminal: controls are shown,
    // not sent.
    for c in line.line.chars() {
        if c.is_control() && c != '\t' {
            let _ = write!(text, "\\x{:02x}", u32::from(c));
        } else {
            text.push(c);
        }
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stderr_line_names_its_stream() {
        let line = Line {
            realtime: 0,
            stream: "stderr".to_owned(),
            line: "oops".to_owned(),
        };
        let text = plain(&line, Style { colour: false });
        assert!(text.ends_with(" stderr oops\n"), "{text}");
    }

    #[test]
    fn control_characters_reach_the_terminal_escaped() {
        let line = Line::from((0, "stdout".to_owned(), "red \u{1b}[31m".to_owned()));
        let text = plain(&line, Style { colour: false });
        assert!(text.ends_with(" stdout red \\x1b[31m\n"), "{text}");
    }

    #[test]
    fn json_is_what_follow_output_writes() {
        let line = Line::from((42, "stdout".to_owned(), "hi \"there\"".to_owned()));
        assert_eq!(
            crate::json_line(&line),
            "{\"realtime\":42,\"stream\":\"stdout\",\"line\":\"hi \\\"there\\\"\"}\n"
        );
    }
}
