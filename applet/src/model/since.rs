//! "Since": a state-change timestamp said as a relative time, and when
//! that text next changes.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `since` (µs since the epoch, 0 when unknown) relative to `now`:
/// "12 s ago", "5 min ago", "3 h ago", "2 days ago".
pub fn relative(since: u64, now: u64) -> String {
    if since == 0 {
        return "—".to_owned();
    }
    let seconds = now.saturating_sub(since) / 1_000_000;
    match seconds {
        0 => "just now".to_owned(),
        s if s < MINUTE => format!("{s} s ago"),
        s if s < HOUR => format!("{} min ago", s / MINUTE),
        s if s < DAY => format!("{} h ago", s / HOUR),
        s if s < 2 * DAY => "1 day ago".to_owned(),
        s => format!("{} days ago", s / DAY),
    }
}

/// How long until the text of [`relative`] for `since` changes, from
/// `now`: a second while it counts seconds, else up to the next minute or
/// hour. The window's clock sleeps that long when nothing else is due.
pub fn next_change(since: u64, now: u64) -> Duration {
    if since == 0 {
        return Duration::from_secs(DAY);
    }
    let elapsed = now.saturating_sub(since);
    let unit = match elapsed / 1_000_000 {
        s if s < MINUTE => 1,
        s if s < HOUR => MINUTE,
        _ => HOUR,
    } * 1_000_000;
    Duration::from_micros(unit - elapsed % unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const T: u64 = 1_700_000_000 * S;

    #[test]
    fn unknown_time_is_a_dash() {
        assert_eq!(relative(0, T), "—");
    }

    #[test]
    fn counts_seconds_then_minutes_then_hours_then_days() {
        assert_eq!(relative(T, T), "just now");
        assert_eq!(relative(T, T + 12 * S), "12 s ago");
        assert_eq!(relative(T, T + 5 * 60 * S + 3 * S), "5 min ago");
        assert_eq!(relative(T, T + 3 * 3600 * S), "3 h ago");
        assert_eq!(relative(T, T + 30 * 3600 * S), "1 day ago");
        assert_eq!(relative(T, T + 50 * 3600 * S), "2 days ago");
    }

    #[test]
    fn a_timestamp_in_the_future_is_just_now() {
        assert_eq!(relative(T + 10 * S, T), "just now");
    }

    #[test]
    fn next_change_is_the_next_unit_boundary() {
        assert_eq!(next_change(T, T + S / 4), Duration::from_micros(3 * S / 4));
        assert_eq!(next_change(T, T + 90 * S), Duration::from_secs(30));
        assert_eq!(next_change(T, T + 3600 * S), Duration::from_secs(3600));
    }
}
