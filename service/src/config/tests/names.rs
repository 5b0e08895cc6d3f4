use super::*;

// --- names ---

#[test]
fn service_names_use_letters_digits_and_few_punctuation_marks() {
    for name in [
        "nginx",
        "a",
        "web-1.example:80_x",
        "apache2@chroot1",
        "t@a.b:c-d_e",
    ] {
        assert_eq!(validate_service_name(name), Ok(()), "{name:?}");
    }
    for (name, found) in [
        ("a b", ' '),
        ("web/x", '/'),
        ("caf\u{e9}", '\u{e9}'),
        ("a@b@c", '@'),
    ] {
        assert!(
            matches!(
                validate_service_name(name),
                Err(NameError::BadCharacter { found: f, .. }) if f == found
            ),
            "{name:?}"
        );
    }
    assert_eq!(validate_service_name(""), Err(NameError::Empty));
    assert_eq!(validate_service_name("@x"), Err(NameError::MissingTemplate));
    assert_eq!(
        validate_service_name("apache2@"),
        Err(NameError::MissingInstance {
            template: "apache2".into()
        })
    );
}

#[test]
fn dot_and_dot_dot_are_not_names() {
    for name in [".", "..", "t@.", "t@..", "..@x"] {
        assert!(
            matches!(validate_service_name(name), Err(NameError::Dots { .. })),
            "{name:?}"
        );
    }
    assert_eq!(validate_service_name("t@.hidden"), Ok(()));
}

#[test]
fn service_name_longer_than_128_bytes_is_refused() {
    assert_eq!(validate_service_name(&"a".repeat(128)), Ok(()));
    assert_eq!(
        validate_service_name(&"a".repeat(129)),
        Err(NameError::TooLong { len: 129 })
    );
    let full = format!("{}@{}", "t".repeat(64), "i".repeat(64));
    assert_eq!(
        validate_service_name(&full),
        Err(NameError::TooLong { len: 129 })
    );
}

#[test]
fn split_name_separates_template_and_instance() {
    assert_eq!(split_name("nginx"), ("nginx", None));
    assert_eq!(split_name("apache2@chroot1"), ("apache2", Some("chroot1")));
    assert_eq!(split_name("apache2@"), ("apache2", Some("")));
    assert_eq!(split_name("a@b@c"), ("a", Some("b@c")));
}

// --- file names ---

#[test]
fn instance_file_is_not_a_thing() {
    assert_eq!(
        parse_error("x@y", EXEC).to_string(),
        "/etc/adoptd/services/x@y.toml: a file cannot define a single instance: name the template \"x@.toml\" and list \"y\" in its instances"
    );
}

#[test]
fn bad_file_names_are_errors() {
    assert_eq!(
        parse_error("a b", EXEC).to_string(),
        "/etc/adoptd/services/a b.toml: bad file name \"a b.toml\": \"a b\" contains ' '; names use only letters, digits and _ . : -"
    );
    for stem in [
        "",
        "@",
        "..",
        "a@b@",
        &"a".repeat(129),
        &format!("{}@", "a".repeat(127)),
    ] {
        assert!(
            matches!(
                parse_error(stem, EXEC).kind,
                ConfigErrorKind::BadFileName { .. }
            ),
            "{stem:?}"
        );
    }
    assert!(parse(&"a".repeat(128), EXEC).is_ok());
    assert!(parse(&format!("{}@", "a".repeat(126)), EXEC).is_ok());
}
