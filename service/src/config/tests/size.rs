use super::*;

// --- sizes ---

#[test]
fn size_accepts_bytes_kib_and_mib() {
    let cases = [
        ("0", 0),
        ("65536", 65536),
        ("512B", 512),
        ("64KiB", 64 * 1024),
        ("64 KiB", 64 * 1024),
        ("1MiB", 1024 * 1024),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
}

#[test]
fn size_with_an_ambiguous_unit_is_refused() {
    assert_eq!(
        parse_size("64K"),
        Err(SizeError::UnknownUnit {
            unit: "K".to_string()
        })
    );
    assert!(matches!(
        parse_size("1MB"),
        Err(SizeError::UnknownUnit { .. })
    ));
    assert_eq!(parse_size("KiB"), Err(SizeError::MissingNumber));
    assert_eq!(parse_size("1.5MiB").ok(), None);
}

#[test]
fn size_beyond_the_cap_is_refused() {
    assert_eq!(parse_size("65MiB"), Err(SizeError::TooLarge));
    assert_eq!(
        parse_size("99999999999999999999999"),
        Err(SizeError::TooLarge)
    );
}

#[test]
fn output_buffer_defaults_to_64kib_and_reads_strings_and_integers() {
    assert_eq!(service(EXEC).output_buffer, 64 * 1024);
    assert_eq!(DEFAULT_OUTPUT_BUFFER, 64 * 1024);
    let spec = service(&format!("{EXEC}output-buffer = \"1MiB\""));
    assert_eq!(spec.output_buffer, 1024 * 1024);
    let spec = service(&format!("{EXEC}output-buffer = 4096"));
    assert_eq!(spec.output_buffer, 4096);
}

#[test]
fn bad_output_buffer_names_its_line_and_key() {
    assert_eq!(
        message(&format!("{EXEC}output-buffer = \"64k\"")),
        "/etc/adoptd/services/web.toml:2: output-buffer: invalid size \"64k\": unknown unit \"k\" (use B, KiB or MiB)"
    );
    assert!(message(&format!("{EXEC}output-buffer = true")).contains("a size such as"));
}
