//! Durations as systemd writes its time spans (systemd.time(7)), which
//! admins already know: `"0"`, `"250ms"`, `"10s"`, `"1m30s"`,
//! `"1min 30s"`, `"1.5s"`, `"2d"`, `"500us"`, `"infinity"`.

use std::time::Duration;

use super::MAX_DURATION;

/// The units of systemd.time(7), longest spelling first within each, in
/// nanoseconds. `m` is minutes and `M` months, as in systemd.
const UNITS: &[(&str, u128)] = &[
    ("usec", 1_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("msec", 1_000_000),
    ("ms", 1_000_000),
    ("seconds", SECOND),
    ("second", SECOND),
    ("sec", SECOND),
    ("s", SECOND),
    ("minutes", 60 * SECOND),
    ("minute", 60 * SECOND),
    ("min", 60 * SECOND),
    ("m", 60 * SECOND),
    ("hours", 3_600 * SECOND),
    ("hour", 3_600 * SECOND),
    ("hr", 3_600 * SECOND),
    ("h", 3_600 * SECOND),
    ("days", 86_400 * SECOND),
    ("day", 86_400 * SECOND),
    ("d", 86_400 * SECOND),
    ("weeks", 604_800 * SECOND),
    ("week", 604_800 * SECOND),
    ("w", 604_800 * SECOND),
    ("months", MONTH),
    ("month", MONTH),
    ("M", MONTH),
    ("years", YEAR),
    ("year", YEAR),
    ("y", YEAR),
];

const SECOND: u128 = 1_000_000_000;
/// 30.44 days, as systemd counts a month.
const MONTH: u128 = 2_629_800 * SECOND;
/// 365.25 days, as systemd counts a year.
const YEAR: u128 = 31_557_600 * SECOND;

/// Parses a time span: numbers, each with an optional unit, summed
/// (`"1min 30s"`, `"1h2m3s"`); a number without a unit is seconds, as in
/// systemd (`"10"`, `"1.5"`); fractions are allowed (`"1.5s"`, `".5h"`);
/// `"infinity"` is the longest duration accepted, [`MAX_DURATION`], which
/// nothing longer may exceed.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "infinity" {
        return Ok(MAX_DURATION);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (whole, after_whole) = split_while(rest, |c| c.is_ascii_digit());
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_point) => split_while(after_point, |c| c.is_ascii_digit()),
            None => ("", after_whole),
        };
        let (unit, after_unit) = split_while(after_number.trim_start(), |c| c.is_alphabetic());
        if whole.is_empty() && fraction.is_empty() {
            return Err(match (unit.is_empty(), rest.chars().next()) {
                (false, _) => DurationError::MissingNumber {
                    unit: unit.to_string(),
                },
                (true, found) => DurationError::Unexpected {
                    found: found.unwrap_or(' '),
                },
            });
        }
        let scale = if unit.is_empty() {
            SECOND
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|&(_, scale)| scale)
                .ok_or_else(|| DurationError::UnknownUnit {
                    unit: unit.to_string(),
                })?
        };
        total = total
            .checked_add(nanoseconds(whole, fraction, scale)?)
            .ok_or(DurationError::TooLarge)?;
        rest = after_unit;
    }
    if total > MAX_DURATION.as_nanos() {
        return Err(DurationError::TooLarge);
    }
    let seconds = u64::try_from(total / SECOND).map_err(|_| DurationError::TooLarge)?;
    // The remainder of a division by 10^9 fits in a u32.
    let nanos = u32::try_from(total % SECOND).unwrap_or(0);
    Ok(Duration::new(seconds, nanos))
}

/// `whole.fraction` units of `scale` nanoseconds, in nanoseconds (digits
/// of the fraction below a nanosecond are dropped).
fn nanoseconds(whole: &str, fraction: &str, scale: u128) -> Result<u128, DurationError> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| DurationError::TooLarge)?
    };
    let mut total = whole.checked_mul(scale).ok_or(DurationError::TooLarge)?;
    let mut place = scale;
    for digit in fraction.bytes().take(24) {
        place /= 10;
        total += u128::from(digit - b'0') * place;
    }
    Ok(total)
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty (write e.g. \"10s\", or \"0\" for none)")]
    Empty,
    #[error(
        "unknown unit \"{unit}\" (use us, ms, s, min, h, d, w, M or y, as systemd does; m is minutes)"
    )]
    UnknownUnit { unit: String },
    #[error("\"{unit}\" needs a number before it (e.g. \"10{unit}\")")]
    MissingNumber { unit: String },
    #[error("unexpected {found:?} (write numbers with units, e.g. \"1min 30s\")")]
    Unexpected { found: char },
    #[error("too large (the maximum is 100 years, also written \"infinity\")")]
    TooLarge,
}

fn split_while(text: &str, keep: impl Fn(char) -> bool) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(text.len(), |(index, _)| index);
    text.split_at(end)
}
