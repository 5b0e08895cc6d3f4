use super::*;

#[test]
fn systemd_time_spans_are_read() {
    let cases = [
        ("0", Duration::ZERO),
        ("000", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("250ms", Duration::from_millis(250)),
        ("10s", Duration::from_secs(10)),
        ("10", Duration::from_secs(10)),
        ("1.5", Duration::from_millis(1500)),
        ("1.5s", Duration::from_millis(1500)),
        (".5h", Duration::from_secs(1800)),
        ("1m30s", Duration::from_secs(90)),
        ("1min 30s", Duration::from_secs(90)),
        ("1m30", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
        ("2d", Duration::from_secs(2 * 86_400)),
        ("1w", Duration::from_secs(604_800)),
        ("1h2m3s4ms", Duration::from_millis(3_723_004)),
        ("7us", Duration::from_micros(7)),
        ("500usec", Duration::from_micros(500)),
        ("3 seconds", Duration::from_secs(3)),
        ("1 2s", Duration::from_secs(3)),
        (" 10 s ", Duration::from_secs(10)),
        ("876000h", MAX_DURATION),
        ("infinity", MAX_DURATION),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn minutes_and_months_are_told_apart_by_case() {
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1M"), Ok(Duration::from_secs(2_629_800)));
}

#[test]
fn an_unknown_unit_is_named() {
    assert_eq!(
        parse_duration("10 sekunden").unwrap_err().to_string(),
        "unknown unit \"sekunden\" (use us, ms, s, min, h, d, w, M or y, as systemd does; m is minutes)"
    );
    assert!(matches!(
        parse_duration("5fortnights"),
        Err(DurationError::UnknownUnit { .. })
    ));
}

#[test]
fn overflow_is_an_error() {
    for text in [
        "18446744073709551616s",
        "18446744073709551615h",
        "18446744073709551615s18446744073709551615s",
        "876000h1us",
        "999999999999999999999999999999999999999999y",
    ] {
        assert_eq!(
            parse_duration(text),
            Err(DurationError::TooLarge),
            "{text:?}"
        );
    }
}

#[test]
fn garbage_is_an_error() {
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    assert_eq!(parse_duration("   "), Err(DurationError::Empty));
    assert_eq!(
        parse_duration("ms"),
        Err(DurationError::MissingNumber { unit: "ms".into() })
    );
    assert_eq!(
        parse_duration("-1s"),
        Err(DurationError::Unexpected { found: '-' })
    );
    assert_eq!(
        parse_duration("1s+"),
        Err(DurationError::Unexpected { found: '+' })
    );
    assert_eq!(
        parse_duration("1,5s"),
        Err(DurationError::Unexpected { found: ',' })
    );
    assert_eq!(
        parse_duration("."),
        Err(DurationError::Unexpected { found: '.' })
    );
}
