use super::*;

// --- durations ---

#[test]
fn duration_accepts_numbers_with_units_combined() {
    let cases = [
        ("0", Duration::ZERO),
        ("000", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("250ms", Duration::from_millis(250)),
        ("10s", Duration::from_secs(10)),
        ("1m30s", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
        ("1h2m3s4ms", Duration::from_millis(3_723_004)),
        ("7us", Duration::from_micros(7)),
        ("1m 30s", Duration::from_secs(90)),
        (" 10 s ", Duration::from_secs(10)),
        ("876000h", MAX_DURATION),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn duration_bare_number_needs_a_unit() {
    assert_eq!(
        parse_duration("10"),
        Err(DurationError::MissingUnit {
            number: "10".into()
        })
    );
    assert_eq!(
        parse_duration("1m30").unwrap_err().to_string(),
        "30 has no unit (add one, e.g. \"30s\" or \"30ms\")"
    );
}

#[test]
fn duration_unknown_unit_is_named() {
    assert_eq!(
        parse_duration("10 sekunden").unwrap_err().to_string(),
        "unknown unit \"sekunden\" (use ms, s, m, h)"
    );
    assert!(matches!(
        parse_duration("5d"),
        Err(DurationError::UnknownUnit { .. })
    ));
}

#[test]
fn duration_fraction_is_refused_with_a_rewrite() {
    for text in ["1.5s", "1,5s", ".5s"] {
        assert_eq!(
            parse_duration(text),
            Err(DurationError::Fraction),
            "{text:?}"
        );
    }
}

#[test]
fn duration_overflow_is_an_error() {
    for text in [
        "18446744073709551616s",
        "18446744073709551615h",
        "18446744073709551615s18446744073709551615s",
        "876000h1us",
    ] {
        assert_eq!(
            parse_duration(text),
            Err(DurationError::TooLarge),
            "{text:?}"
        );
    }
}

#[test]
fn duration_garbage_is_an_error() {
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
        parse_duration("1 2s"),
        Err(DurationError::MissingUnit { number: "1".into() })
    );
}
