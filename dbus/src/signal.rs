//! Signals by name and number, spelled one way for every part of adoptd:
//! service files (`stop-signal = "TERM"`), the `KillSignal` and
//! `ReloadSignal` properties, `Kill(i)` and `adoptctl kill --signal`.
//!
//! Names are the kernel's (`TERM`, `SIGTERM`, any case), through nix;
//! realtime signals are counted from the C library's SIGRTMIN (34 with
//! glibc, which keeps 32 and 33 for itself), as `kill -l` and systemd count
//! them: `RTMIN`, `RTMIN+3`, `RTMAX`, `RTMAX-2`. Numbers are 1 to SIGRTMAX.

use std::{fmt, str::FromStr};

use nix::sys::signal::Signal as Named;

/// A valid signal number, from 1 to SIGRTMAX. Serde writes the number
/// and refuses one that is not a signal.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "i32", into = "i32")]
pub struct Signal(i32);

impl TryFrom<i32> for Signal {
    type Error = String;

    fn try_from(number: i32) -> Result<Self, Self::Error> {
        Signal::new(number).ok_or_else(|| format!("{number} is not a signal number"))
    }
}

impl From<Signal> for i32 {
    fn from(signal: Signal) -> i32 {
        signal.0
    }
}

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const TERM: Signal = Signal(libc::SIGTERM);

    /// `None` unless `number` is a signal (1 to SIGRTMAX; 0 is not a signal).
    pub fn new(number: i32) -> Option<Self> {
        (1..=libc::SIGRTMAX())
            .contains(&number)
            .then_some(Signal(number))
    }

    /// The number to pass to kill(2) or pidfd_send_signal(2).
    pub fn number(self) -> i32 {
        self.0
    }

    /// `"TERM"`, `"RTMIN+3"`, or the number (`"32"`) for the few signals
    /// without a name. Parsing the name gives the same signal back.
    pub fn name(self) -> String {
        if let Ok(named) = Named::try_from(self.0) {
            return named.as_str().trim_start_matches("SIG").to_owned();
        }
        match self.0 - libc::SIGRTMIN() {
            0 => "RTMIN".to_owned(),
            offset if offset > 0 => format!("RTMIN+{offset}"),
            _ => self.0.to_string(),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Accepts `"TERM"`, `"SIGTERM"`, `"sigterm"`, `"15"`, `"RTMIN+3"`,
    /// `"SIGRTMIN+3"`, `"RTMAX"` and `"RTMAX-2"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let max = libc::SIGRTMAX();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse::<i32>()
                .ok()
                .and_then(Signal::new)
                .ok_or_else(|| SignalError::OutOfRange {
                    number: text.to_owned(),
                    max,
                });
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        let (rtmin, rtmax) = (libc::SIGRTMIN(), max);
        let realtime = if let Some(offset) = name.strip_prefix("RTMIN") {
            realtime_offset(offset, '+').map(|offset| rtmin.checked_add(offset))
        } else if let Some(offset) = name.strip_prefix("RTMAX") {
            realtime_offset(offset, '-').map(|offset| rtmax.checked_sub(offset))
        } else {
            None
        };
        match realtime {
            Some(Some(number)) if (rtmin..=rtmax).contains(&number) => Ok(Signal(number)),
            Some(_) => Err(SignalError::RealtimeOutOfRange {
                name: name.to_owned(),
                count: rtmax - rtmin,
            }),
            // nix spells every name with its prefix; "SIG" alone is no name.
            None if name.is_empty() => Err(SignalError::UnknownName { max }),
            None => format!("SIG{name}")
                .parse::<Named>()
                .map(|named| Signal(named as i32))
                .map_err(|_| SignalError::UnknownName { max }),
        }
    }
}

/// Why a text is not a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalError {
    UnknownName { max: i32 },
    OutOfRange { number: String, max: i32 },
    RealtimeOutOfRange { name: String, count: i32 },
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::UnknownName { max } => write!(
                f,
                "unknown signal name (use a name such as TERM, HUP, INT or USR1, or a number from 1 to {max})"
            ),
            SignalError::OutOfRange { number, max } => {
                write!(f, "{number} is not a signal number (use 1 to {max})")
            }
            SignalError::RealtimeOutOfRange { name, count } => write!(
                f,
                "{name} is out of range (the realtime signals are RTMIN to RTMIN+{count})"
            ),
        }
    }
}

impl std::error::Error for SignalError {}

/// The offset in `"+3"` (after RTMIN) or `"-3"` (after RTMAX); `""` is 0.
fn realtime_offset(text: &str, sign: char) -> Option<i32> {
    if text.is_empty() {
        return Some(0);
    }
    let digits = text.strip_prefix(sign)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Too many digits is out of range, not an unknown name.
    Some(digits.parse().unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(number: i32) -> Signal {
        Signal::new(number).unwrap_or_else(|| panic!("{number} is a signal"))
    }

    #[test]
    fn names_numbers_and_realtime_signals_parse() {
        let rtmin = libc::SIGRTMIN();
        let cases = [
            ("TERM", libc::SIGTERM),
            ("SIGTERM", libc::SIGTERM),
            ("sigterm", libc::SIGTERM),
            ("15", libc::SIGTERM),
            ("KILL", libc::SIGKILL),
            ("usr1", libc::SIGUSR1),
            ("PWR", libc::SIGPWR),
            ("RTMIN", rtmin),
            ("RTMIN+3", rtmin + 3),
            ("SIGRTMIN+3", rtmin + 3),
            ("RTMAX", libc::SIGRTMAX()),
            ("RTMAX-1", libc::SIGRTMAX() - 1),
        ];
        for (text, number) in cases {
            assert_eq!(
                text.parse::<Signal>().map(Signal::number),
                Ok(number),
                "{text:?}"
            );
        }
        assert_eq!(Signal::TERM.name(), "TERM");
        assert_eq!(signal(rtmin + 3).name(), "RTMIN+3");
        assert_eq!(Signal::HUP.to_string(), "HUP");
    }

    #[test]
    fn every_number_round_trips_through_its_name() {
        for number in 1..=libc::SIGRTMAX() {
            let signal = signal(number);
            assert_eq!(signal.name().parse(), Ok(signal), "{}", signal.name());
        }
    }

    #[test]
    fn zero_and_numbers_out_of_range_are_refused() {
        assert_eq!(Signal::new(0), None);
        assert_eq!(Signal::new(-1), None);
        assert_eq!(Signal::new(libc::SIGRTMAX() + 1), None);
        for text in ["0", "-9", "65", "99999999999999999999"] {
            assert!(
                matches!(text.parse::<Signal>(), Err(SignalError::OutOfRange { .. })),
                "{text:?}"
            );
        }
        assert!(matches!(
            "RTMIN+99".parse::<Signal>(),
            Err(SignalError::RealtimeOutOfRange { .. })
        ));
        assert!(matches!(
            "RTMAX-99".parse::<Signal>(),
            Err(SignalError::RealtimeOutOfRange { .. })
        ));
    }

    #[test]
    fn unknown_names_are_refused() {
        for text in ["", "TERMINATE", "SIG", "RTMIN3", "RTMIN+", "+15", "TERM "] {
            assert!(
                matches!(text.parse::<Signal>(), Err(SignalError::UnknownName { .. })),
                "{text:?}"
            );
        }
    }
}
