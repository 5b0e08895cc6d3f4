use super::*;

// --- directories and files ---

#[test]
fn load_dir_loads_services_and_templates_sorted_by_name() {
    let dir = ScratchDir::new("sorted");
    dir.write("zeta.toml", EXEC);
    dir.write("alpha.toml", EXEC);
    dir.write("site@.toml", &format!("{EXEC}instances = [\"b\", \"a\"]\n"));
    dir.write("lazy@.toml", EXEC);
    let loaded = load_dir(dir.path());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(
        names(&loaded.services),
        ["alpha", "site@a", "site@b", "zeta"]
    );
    assert_eq!(
        loaded.templates.keys().collect::<Vec<_>>(),
        ["lazy", "site"]
    );
    assert_eq!(loaded.services[0].source, dir.path().join("alpha.toml"));
}

#[test]
fn one_bad_file_does_not_stop_the_others() {
    let dir = ScratchDir::new("one-bad");
    dir.write("good.toml", EXEC);
    dir.write("bad.toml", &format!("{EXEC}restart-delay = \"soon\"\n"));
    dir.write("worse.toml", "\u{0}\u{1}binary = garbage[[[");
    dir.write(
        "site@.toml",
        &format!("{EXEC}instances = [\"ok\", \"not ok\"]\n"),
    );
    let loaded = load_dir(dir.path());
    assert_eq!(names(&loaded.services), ["good", "site@ok"]);
    assert_eq!(loaded.errors.len(), 3, "{:?}", loaded.errors);
    assert_eq!(loaded.errors[0].path, dir.path().join("bad.toml"));
    assert_eq!(loaded.errors[0].line, Some(2));
    assert_eq!(loaded.errors[1].path, dir.path().join("site@.toml"));
    assert_eq!(loaded.errors[2].path, dir.path().join("worse.toml"));
}

#[test]
fn load_dir_ignores_hidden_backup_other_files_and_subdirectories() {
    let dir = ScratchDir::new("ignored");
    dir.write("web.toml", EXEC);
    for name in [
        "web.toml~",
        ".web.toml.swp",
        ".hidden.toml",
        "README",
        "web.conf",
        "web.TOML",
    ] {
        dir.write(name, "garbage [[[");
    }
    fs::create_dir(dir.path().join("sub.toml")).unwrap();
    fs::create_dir(dir.path().join("nested")).unwrap();
    dir.write("nested/inner.toml", EXEC);
    let loaded = load_dir(dir.path());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(names(&loaded.services), ["web"]);
}

#[test]
fn load_dir_reports_badly_named_toml_files() {
    let dir = ScratchDir::new("bad-names");
    dir.write("a b.toml", EXEC);
    dir.write("x@y.toml", EXEC);
    dir.write("ok.toml", EXEC);
    let loaded = load_dir(dir.path());
    assert_eq!(names(&loaded.services), ["ok"]);
    assert!(matches!(
        loaded.errors[0].kind,
        ConfigErrorKind::BadFileName { .. }
    ));
    assert!(matches!(
        loaded.errors[1].kind,
        ConfigErrorKind::InstanceFile { .. }
    ));
}

#[test]
fn load_dir_reports_a_toml_file_whose_name_is_not_utf8() {
    let dir = ScratchDir::new("not-utf8-name");
    let name = OsStr::from_bytes(b"caf\xe9.toml");
    fs::write(dir.path().join(name), EXEC).unwrap();
    let loaded = load_dir(dir.path());
    assert!(loaded.services.is_empty());
    assert!(matches!(
        loaded.errors[0].kind,
        ConfigErrorKind::BadFileName {
            reason: FileNameProblem::NotUtf8,
            ..
        }
    ));
}

#[test]
fn load_dir_follows_symlinks_and_reports_dangling_ones() {
    let dir = ScratchDir::new("symlinks");
    let target = dir.write("target.conf", EXEC);
    std::os::unix::fs::symlink(&target, dir.path().join("linked.toml")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("dangling.toml"))
        .unwrap();
    let loaded = load_dir(dir.path());
    assert_eq!(names(&loaded.services), ["linked"]);
    assert_eq!(loaded.errors.len(), 1);
    assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::Read(_)));
    assert!(
        loaded.errors[0]
            .to_string()
            .contains("dangling.toml: cannot read the file: ")
    );
}

#[test]
fn unreadable_dir_gives_one_error() {
    let dir = ScratchDir::new("unreadable");
    let missing = dir.path().join("missing");
    let loaded = load_dir(&missing);
    assert!(loaded.services.is_empty() && loaded.templates.is_empty());
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].path, missing);
    assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::ReadDir(_)));
}

#[test]
fn file_too_large_is_refused() {
    let dir = ScratchDir::new("large");
    let padding = "#".repeat(usize::try_from(MAX_FILE_SIZE).unwrap());
    let path = dir.write("big.toml", &format!("{EXEC}{padding}"));
    let error = load_file(&path).unwrap_err();
    assert!(matches!(error.kind, ConfigErrorKind::TooLarge { .. }));
    assert!(error.to_string().contains("file too large"));
}

#[test]
fn non_utf8_file_is_refused_with_its_line() {
    let dir = ScratchDir::new("latin1");
    let path = dir.path().join("web.toml");
    fs::write(&path, b"exec = [\"/bin/x\"]\ndescription = \"caf\xe9\"\n").unwrap();
    let error = load_file(&path).unwrap_err();
    assert!(matches!(error.kind, ConfigErrorKind::NotUtf8));
    assert_eq!((error.line, error.column), (Some(2), Some(19)));
}

#[test]
fn fifo_is_refused_not_waited_on() {
    let dir = ScratchDir::new("fifo");
    let path = dir.path().join("pipe.toml");
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c_path is a valid NUL-terminated string for the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    assert!(matches!(
        load_file(&path).unwrap_err().kind,
        ConfigErrorKind::NotAFile
    ));
    let loaded = load_dir(dir.path());
    assert!(matches!(loaded.errors[0].kind, ConfigErrorKind::NotAFile));
}

#[test]
fn load_file_refuses_a_directory_and_a_name_without_toml() {
    let dir = ScratchDir::new("load-file");
    fs::create_dir(dir.path().join("d.toml")).unwrap();
    assert!(matches!(
        load_file(&dir.path().join("d.toml")).unwrap_err().kind,
        ConfigErrorKind::NotAFile
    ));
    let path = dir.write("web.conf", EXEC);
    assert!(matches!(
        load_file(&path).unwrap_err().kind,
        ConfigErrorKind::BadFileName {
            reason: FileNameProblem::NotToml,
            ..
        }
    ));
    let path = dir.write("web@.toml", EXEC);
    assert!(matches!(load_file(&path), Ok(Unit::Template(_))));
}

// --- robustness ---

#[test]
fn nasty_inputs_return_errors_not_panics() {
    let deep_arrays = format!("exec = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_tables = format!(
        "environment = {}{}",
        "{a=".repeat(10_000),
        "}".repeat(10_000)
    );
    let deep_keys = format!("{}x = 1", "a.".repeat(10_000));
    let huge_key = format!("{} = 1", "k".repeat(100_000));
    let many_keys: String = (0..10_000).map(|i| format!("k{i} = {i}\n")).collect();
    let binary: String = (0u8..=255).map(char::from).collect();
    let inputs = [
        "",
        "\n\n\n",
        "=",
        "[[[",
        "\u{feff}",
        "exec = [\"/bin/x\"]\n[exec]",
        "exec = [\"/bin/x\"]\n[[instances]]\n",
        "exec = [\"/bin/x\"]\nstart-limit = []",
        "exec = [\"/bin/x\"]\n[start-limit.burst]\n",
        "exec = [\"/bin/x\"]\nstop-timeout = 9223372036854775807",
        "exec = [\"/bin/x\"]\nstop-timeout = -9223372036854775808",
        "exec = [\"/bin/x\"]\nstop-signal = -1",
        "exec = [\"/bin/x\"]\nstop-signal = 1e400",
        "exec = [\"/bin/x\"]\nrestart-delay = \"99999999999999999999999999h\"",
        "exec = [\"/bin/x\"]\nrestart-delay = \"\u{1f600}\"",
        "exec = [\"/bin/x\"]\nstart-limit = { burst = 1e10 }",
        "exec = [[\"/bin/x\"]]",
        "exec = [{}]",
        "exec = [\"%\"]",
        "exec = [\"/%\"]\ndescription = \"%\"\nchroot = \"%\"",
        "exec = \"\"",
        "exec = \"   \"",
        "\"\" = 1",
        "exec = [\"/bin/x\"]\nenvironment = { \"\" = \"\" }",
        &deep_arrays,
        &deep_tables,
        &deep_keys,
        &huge_key,
        &many_keys,
        &binary,
    ];
    for stem in ["web", "web@", "x@y", "", "@", "\u{0}"] {
        for input in inputs {
            if let Ok(Unit::Template(template)) = parse(stem, input) {
                let _ = template.instantiate_listed();
                for instance in ["", "%", "%i", "..", "a:b", &"x".repeat(1000)] {
                    let _ = template.instantiate(instance);
                }
            }
        }
    }
    for input in inputs.iter().skip(1) {
        assert!(parse("web", input).is_err(), "{input:.80?}");
    }
}

#[test]
fn errors_without_line_or_key_leave_those_parts_out() {
    let error = ConfigError::whole_file(Path::new("/d/x.toml"), ConfigErrorKind::NotAFile);
    assert_eq!(
        error.to_string(),
        "/d/x.toml: not a regular file (a service file must be a file or a symlink to one)"
    );
}
