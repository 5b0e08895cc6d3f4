//! Durations as service files write them (`"250ms"`, `"1m30s"`).

use std::time::Duration;

use super::MAX_DURATION;

/// Parses a duration: numbers with units, combinable, summed: `"0"`,
/// `"250ms"`, `"10s"`, `"1m30s"`, `"2h"`, `"1h2m3s4ms"`. Units are `us`,
/// `ms`, `s`, `m` and `h`. Spaces around and between the parts are allowed
/// (`"1m 30s"`, `"10 s"`). A bare number other than 0 is refused because its
/// unit would be a guess; fractions are refused (write `"1s500ms"`); the
/// result may not exceed [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return if text.bytes().all(|byte| byte == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::MissingUnit {
                number: text.to_string(),
            })
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (digits, after_digits) = split_while(rest, |c| c.is_ascii_digit());
        let (unit, after_unit) = split_while(after_digits.trim_start(), char::is_alphabetic);
        if digits.is_empty() {
            return Err(match (unit.is_empty(), rest.chars().next()) {
                (false, _) => DurationError::MissingNumber {
                    unit: unit.to_string(),
                },
                (true, Some('.')) => DurationError::Fraction,
                (true, found) => DurationError::Unexpected {
                    found: found.unwrap_or(' '),
                },
            });
        }
        if after_digits.starts_with(['.', ',']) {
            return Err(DurationError::Fraction);
        }
        if unit.is_empty() {
            return Err(match after_digits.trim_start().chars().next() {
                Some(found) if !found.is_ascii_digit() => DurationError::Unexpected { found },
                _ => DurationError::MissingUnit {
                    number: digits.to_string(),
                },
            });
        }
        let count: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
        let part = match unit {
            "us" => Some(Duration::from_micros(count)),
            "ms" => Some(Duration::from_millis(count)),
            "s" => Some(Duration::from_secs(count)),
            "m" => count.checked_mul(60).map(Duration::from_secs),
            "h" => count.checked_mul(3600).map(Duration::from_secs),
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                });
            }
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or(DurationError::TooLarge)?;
        rest = after_unit;
    }
    if total > MAX_DURATION {
        return Err(DurationError::TooLarge);
    }
    Ok(total)
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty (write e.g. \"10s\", or \"0\" for none)")]
    Empty,
    #[error("{number} has no unit (add one, e.g. \"{number}s\" or \"{number}ms\")")]
    MissingUnit { number: String },
    #[error("unknown unit \"{unit}\" (use ms, s, m, h)")]
    UnknownUnit { unit: String },
    #[error("\"{unit}\" needs a number before it (e.g. \"10{unit}\")")]
    MissingNumber { unit: String },
    #[error("fractions are not supported (write e.g. \"1s500ms\" instead of \"1.5s\")")]
    Fraction,
    #[error("unexpected {found:?} (write numbers with units, e.g. \"1m30s\")")]
    Unexpected { found: char },
    #[error("too large (the maximum is 876000h, 100 years)")]
    TooLarge,
}

pub(super) fn split_while(text: &str, keep: impl Fn(char) -> bool) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(text.len(), |(index, _)| index);
    text.split_at(end)
}
