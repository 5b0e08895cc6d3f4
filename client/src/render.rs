//! Text for people: colours, times, durations and signal names.
//!
//! Colour only when stdout is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>); the decision is made once, in [`Style`].

use std::{
    io::IsTerminal as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use adoptd_dbus::{Signal, State};

/// Whether to colour, and the colours.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    /// Colour on a terminal, unless `NO_COLOR` says otherwise.
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Style {
            colour: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// `text` in the colour of `state`.
    pub fn state(self, state: State, text: &str) -> String {
        let code = match state {
            State::Running => "32",                                        // green
            State::Failed => "31",                                         // red
            State::Starting | State::Stopping | State::Restarting => "33", // yellow
            State::Stopped => "",
        };
        self.paint(code, text)
    }

    /// `text` in bold.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` in red, for what is wrong.
    pub fn warn(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `text` dimmed.
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// The dot in front of a service: full while it has (or is about to have)
/// processes, hollow when it is stopped.
pub fn dot(state: State) -> &'static str {
    match state {
        State::Stopped => "○",
        _ => "●",
    }
}

/// Now, in µs since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A `StateChangeTimestamp` as local time: `2026-05-01 12:00:03 CEST`.
pub fn timestamp(us: u64) -> String {
    local_time(us, c"%Y-%m-%d %H:%M:%S %Z")
}

/// The time of an output line, local, to the millisecond and without the
/// zone (said once by `timestamp`, not on every line):
/// `2026-05-01 12:00:03.250`.
pub fn line_time(us: u64) -> String {
    format!(
        "{}.{:03}",
        local_time(us, c"%Y-%m-%d %H:%M:%S"),
        us % 1_000_000 / 1000
    )
}

/// `us` µs since the epoch as local time in strftime's `format`.
fn local_time(us: u64, format: &std::ffi::CStr) -> String {
    let seconds = libc::time_t::try_from(us / 1_000_000).unwrap_or(libc::time_t::MAX);
    // SAFETY: an all-zero tm is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // thread-safe variant and keeps no pointer.
    let converted = unsafe { libc::localtime_r(&seconds, &mut tm) };
    if converted.is_null() {
        return format!("@{}", us / 1_000_000);
    }
    let mut buffer = [0u8; 64];
    // SAFETY: the buffer is valid for its length, the format is a C string
    // and tm was filled in by localtime_r.
    let length = unsafe {
        libc::strftime(
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            format.as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// How long ago `us` was, as systemd says it: `150ms`, `42s`, `3min 2s`,
/// `2h 5min`, `3 days 4h`.
pub fn ago(us: u64, now_us: u64) -> String {
    span(Duration::from_micros(now_us.saturating_sub(us)))
}

/// A duration in the largest two units that fit.
pub fn span(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if seconds == 0 {
        format!("{}ms", duration.as_millis())
    } else if minutes == 0 {
        format!("{seconds}s")
    } else if hours == 0 {
        format!("{minutes}min {}s", seconds % 60)
    } else if days == 0 {
        format!("{hours}h {}min", minutes % 60)
    } else {
        let unit = if days == 1 { "day" } else { "days" };
        format!("{days} {unit} {}h", hours % 24)
    }
}

/// A signal's name: `KILL`, `RTMIN+3`, or the number if it has none.
pub fn signal_name(signal: i32) -> String {
    Signal::new(signal).map_or_else(|| signal.to_string(), |signal| signal.name())
}

/// How the last main process ended: `code 1`, `signal 9 (KILL)`, or
/// `None` if none has.
pub fn last_exit(code: i32, signal: i32) -> Option<String> {
    if signal >= 0 {
        Some(format!("signal {signal} ({})", signal_name(signal)))
    } else if code >= 0 {
        Some(format!("code {code}"))
    } else {
        None
    }
}

/// Writes `text` to stdout at once; false when stdout is closed (`| head`),
/// which ends the command quietly rather than with a panic.
pub fn emit(text: &str) -> bool {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_the_two_largest_units() {
        assert_eq!(span(Duration::from_millis(150)), "150ms");
        assert_eq!(span(Duration::from_secs(42)), "42s");
        assert_eq!(span(Duration::from_secs(182)), "3min 2s");
        assert_eq!(span(Duration::from_secs(2 * 3600 + 5 * 60 + 9)), "2h 5min");
        assert_eq!(span(Duration::from_secs(86_400 + 3600)), "1 day 1h");
        assert_eq!(
            span(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3 days 4h"
        );
    }

    #[test]
    fn a_clock_going_back_is_no_negative_age() {
        assert_eq!(ago(2_000_000, 1_000_000), "0ms");
    }

    #[test]
    fn signals_are_shown_by_name_or_number() {
        assert_eq!(signal_name(libc::SIGKILL), "KILL");
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), "RTMIN+3");
        assert_eq!(signal_name(0), "0");
    }

    #[test]
    fn last_exit_says_code_or_signal() {
        assert_eq!(last_exit(-1, -1), None);
        assert_eq!(last_exit(0, -1).as_deref(), Some("code 0"));
        assert_eq!(last_exit(-1, 9).as_deref(), Some("signal 9 (KILL)"));
    }

    #[test]
    fn no_colour_means_plain_text() {
        let plain = Style { colour: false };
        assert_eq!(plain.state(State::Failed, "x"), "x");
        let coloured = Style { colour: true };
        assert_eq!(coloured.state(State::Failed, "x"), "\x1b[31mx\x1b[0m");
    }
}
