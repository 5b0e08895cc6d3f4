use super::*;

// --- plain services ---

#[test]
fn minimal_service_gets_the_documented_defaults() {
    let spec = service(EXEC);
    assert_eq!(
        spec,
        ServiceSpec::new(
            "web".into(),
            PathBuf::from("/etc/adoptd/services/web.toml"),
            digest(EXEC),
            String::new(),
            vec!["/usr/sbin/nginx".into()],
            Policy {
                expect: Expect::Auto,
                restart: Restart::OnFailure,
                restart_delay: Duration::from_millis(100),
                start_limit: StartLimit {
                    burst: 5,
                    interval: Duration::from_secs(10)
                },
                stop_signal: Signal::TERM,
                stop_timeout: Duration::from_secs(10),
                reload_signal: Signal::HUP,
                start_timeout: Duration::from_secs(90),
            },
            Output::Log,
            DEFAULT_OUTPUT_BUFFER,
            true,
            Uncommon::default(),
        )
    );
}

#[test]
fn every_key_is_read() {
    let spec = service(
        r#"
        description = "Web server"
        exec = ["/usr/sbin/nginx", "-g", "daemon off;"]
        expect = "daemon"
        restart = "always"
        restart-delay = "1s500ms"
        start-limit = { burst = 3, interval = "1m" }
        stop-signal = "QUIT"
        stop-timeout = "30s"
        start-timeout = "2min"
        reload-signal = "USR2"
        chroot = "/srv/web"
        user = "www-data"
        group = "www-data"
        working-directory = "/"
        environment = { LANG = "C", _X1 = "" }
        pid-file = "/run/nginx.pid"
        output = "null"
        autostart = false
        "#,
    );
    assert_eq!(spec.description, "Web server");
    assert_eq!(spec.exec, ["/usr/sbin/nginx", "-g", "daemon off;"]);
    assert_eq!(spec.policy.expect, Expect::Daemon);
    assert_eq!(spec.policy.restart, Restart::Always);
    assert_eq!(spec.policy.restart_delay, Duration::from_millis(1500));
    assert_eq!(
        spec.policy.start_limit,
        StartLimit {
            burst: 3,
            interval: Duration::from_secs(60)
        }
    );
    assert_eq!(spec.policy.stop_signal, "QUIT".parse().unwrap());
    assert_eq!(spec.policy.stop_timeout, Duration::from_secs(30));
    assert_eq!(spec.policy.start_timeout, Duration::from_secs(120));
    assert_eq!(spec.policy.reload_signal, "USR2".parse().unwrap());
    assert_eq!(
        spec.chroot().map(Path::to_path_buf),
        Some(PathBuf::from("/srv/web"))
    );
    assert_eq!(spec.user(), Some("www-data"));
    assert_eq!(spec.group(), Some("www-data"));
    assert_eq!(
        spec.working_directory().map(Path::to_path_buf),
        Some(PathBuf::from("/"))
    );
    assert_eq!(spec.environment()["LANG"], "C");
    assert_eq!(spec.environment()["_X1"], "");
    assert_eq!(
        spec.pid_file().map(Path::to_path_buf),
        Some(PathBuf::from("/run/nginx.pid"))
    );
    assert_eq!(spec.output, Output::Null);
    assert!(!spec.autostart);
}

#[test]
fn enum_values_are_spelled_as_in_files() {
    for expect in <Expect as Choice>::ALL {
        let spec = service(&format!("{EXEC}expect = \"{}\"", expect.as_str()));
        assert_eq!(spec.policy.expect, *expect);
    }
    for restart in <Restart as Choice>::ALL {
        let spec = service(&format!("{EXEC}restart = \"{}\"", restart.as_str()));
        assert_eq!(spec.policy.restart, *restart);
    }
    for output in <Output as Choice>::ALL {
        let spec = service(&format!("{EXEC}output = \"{}\"", output.as_str()));
        assert_eq!(spec.output, *output);
    }
    assert_eq!(Output::default(), Output::Log);
}

#[test]
fn invalid_enum_value_lists_the_choices() {
    assert_eq!(
        message(&format!("{EXEC}restart = \"sometimes\"")),
        "/etc/adoptd/services/web.toml:2: restart: invalid value \"sometimes\" (use no, on-failure or always)"
    );
    assert!(
        message(&format!("{EXEC}expect = \"forking\""))
            .contains("auto, foreground, fork, daemon or notify")
    );
    assert!(message(&format!("{EXEC}output = \"journal\"")).contains("log, null or inherit"));
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let error = parse_error("web", &format!("{EXEC}\nrestrat = \"always\"\n"));
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/web.toml:3: restrat: unknown key (did you mean \"restart\"?)"
    );
    assert_eq!((error.line, error.column), (Some(3), Some(1)));
    assert_eq!(error.key.as_deref(), Some("restrat"));
}

#[test]
fn unknown_key_suggests_the_dashed_spelling() {
    assert!(
        message(&format!("{EXEC}restart_delay = \"1s\""))
            .ends_with("restart_delay: unknown key (did you mean \"restart-delay\"?)")
    );
    assert!(message(&format!("{EXEC}Exec2 = 1")).contains("did you mean \"exec\"?"));
}

#[test]
fn unknown_key_without_a_near_match_lists_the_keys() {
    let text = message(&format!("{EXEC}color = \"blue\""));
    assert!(
        text.contains("color: unknown key (the keys are description, exec, expect"),
        "{text}"
    );
}

#[test]
fn unknown_key_inside_start_limit_is_refused() {
    let error = parse_error(
        "web",
        &format!("{EXEC}[start-limit]\nburst = 2\nbrust = 3\n"),
    );
    assert_eq!(error.key.as_deref(), Some("start-limit.brust"));
    assert_eq!(error.line, Some(4));
    assert!(error.to_string().ends_with("(did you mean \"burst\"?)"));
}

#[test]
fn first_problem_in_file_order_is_reported() {
    let error = parse_error("web", "zzz = 1\nexec = \"bad\"\naaa = 2\n");
    assert_eq!(error.key.as_deref(), Some("zzz"));
}

#[test]
fn toml_syntax_error_reports_line_and_column() {
    let error = parse_error("web", &format!("{EXEC}description = \"unterminated\n"));
    assert_eq!(error.line, Some(2));
    assert!(error.column.is_some());
    assert_eq!(error.key, None);
    assert!(
        error
            .to_string()
            .starts_with("/etc/adoptd/services/web.toml:2: invalid TOML: ")
    );
    assert!(!error.to_string().contains('\n'));
}

#[test]
fn a_key_given_twice_is_a_syntax_error() {
    let error = parse_error("web", &format!("{EXEC}user = \"a\"\nuser = \"b\"\n"));
    assert_eq!(error.line, Some(3));
    assert!(error.to_string().contains("invalid TOML: duplicate key"));
}

#[test]
fn missing_exec_is_refused() {
    assert_eq!(
        message("description = \"x\"\n"),
        "/etc/adoptd/services/web.toml: exec: missing: every service needs one, e.g. exec = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]"
    );
    assert!(matches!(
        parse_error("web", "").kind,
        ConfigErrorKind::MissingExec
    ));
}

#[test]
fn exec_as_a_string_says_it_is_an_argv_not_a_shell_line() {
    assert_eq!(
        message("exec = \"/usr/sbin/nginx -g x\"\n"),
        "/etc/adoptd/services/web.toml:1: exec: exec is an argv, not a shell line: write exec = [\"/usr/sbin/nginx\", \"-g\", \"x\"]"
    );
}

#[test]
fn exec_must_not_be_empty() {
    assert!(matches!(
        parse_error("web", "exec = []").kind,
        ConfigErrorKind::ExecEmpty
    ));
}

#[test]
fn relative_exec_suggests_an_absolute_path() {
    assert_eq!(
        message("description = \"x\"\nexec = [\"sleep\", \"1\"]\n"),
        "/etc/adoptd/services/web.toml:2: exec: exec[0] must be an absolute path (\"sleep\" is relative; write e.g. \"/usr/bin/sleep\")"
    );
    assert!(
        message("exec = [\"./bin/no-such-program-anywhere\"]")
            .contains("write e.g. \"/usr/bin/no-such-program-anywhere\"")
    );
    assert!(matches!(
        parse_error("web", "exec = [\"\"]").kind,
        ConfigErrorKind::ExecRelative { .. }
    ));
}

#[test]
fn exec_argument_errors_point_at_the_argument() {
    let error = parse_error("web", "exec = [\n  \"/bin/sleep\",\n  10,\n]\n");
    assert_eq!(error.line, Some(3));
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/web.toml:3: exec: exec[1] must be a string, found an integer (quote it)"
    );
    let nul = parse_error("web", "exec = [\n\"/bin/echo\",\n\"a\\u0000b\"]");
    assert!(matches!(nul.kind, ConfigErrorKind::Nul));
    assert_eq!(nul.line, Some(3));
}

#[test]
fn invalid_duration_reports_file_line_and_key() {
    let text = format!("{EXEC}description = \"web\"\n\nrestart-delay = \"10 sekunden\"\n");
    assert_eq!(
        message(&text),
        "/etc/adoptd/services/web.toml:4: restart-delay: invalid duration \"10 sekunden\": unknown unit \"sekunden\" (use us, ms, s, min, h, d, w, M or y, as systemd does; m is minutes)"
    );
}

#[test]
fn bare_numbers_are_seconds_as_in_systemd() {
    let delay = |value: &str| {
        service(&format!("{EXEC}restart-delay = {value}"))
            .policy
            .restart_delay
    };
    assert_eq!(delay("0"), Duration::ZERO);
    assert_eq!(delay("10"), Duration::from_secs(10));
    assert_eq!(delay("1.5"), Duration::from_millis(1500));
    assert_eq!(delay("\"1min 30s\""), Duration::from_secs(90));
    assert!(
        message(&format!("{EXEC}stop-timeout = true"))
            .contains("expected a duration such as \"10s\", found a boolean")
    );
}

#[test]
fn start_limit_may_set_one_field_and_keeps_the_other_default() {
    let spec = service(&format!("{EXEC}[start-limit]\nburst = 1\n"));
    assert_eq!(spec.policy.start_limit.burst, 1);
    assert_eq!(spec.policy.start_limit.interval, Duration::from_secs(10));
    let spec = service(&format!("{EXEC}start-limit.interval = \"5s\"\n"));
    assert_eq!(spec.policy.start_limit.burst, 5);
    assert_eq!(spec.policy.start_limit.interval, Duration::from_secs(5));
}

#[test]
fn start_limit_burst_must_be_at_least_one() {
    for burst in ["0", "-1", "4294967296", "99999999999999999999999"] {
        let error = parse_error("web", &format!("{EXEC}start-limit = {{ burst = {burst} }}"));
        assert!(
            matches!(error.kind, ConfigErrorKind::Burst { .. }),
            "{burst}"
        );
        assert_eq!(error.key.as_deref(), Some("start-limit.burst"));
    }
    assert_eq!(
        service(&format!("{EXEC}start-limit = {{ burst = 4294967295 }}"))
            .policy
            .start_limit
            .burst,
        u32::MAX
    );
    assert!(
        message(&format!("{EXEC}start-limit = {{ burst = \"5\" }}"))
            .contains("expected a whole number")
    );
}

#[test]
fn start_limit_interval_must_be_more_than_zero() {
    let error = parse_error(
        "web",
        &format!("{EXEC}start-limit = {{ interval = \"0s\" }}"),
    );
    assert!(matches!(error.kind, ConfigErrorKind::ZeroInterval));
    assert_eq!(error.key.as_deref(), Some("start-limit.interval"));
}

#[test]
fn signals_in_files_accept_names_and_numbers() {
    let spec = service(&format!(
        "{EXEC}stop-signal = 9\nreload-signal = \"SIGUSR1\"\n"
    ));
    assert_eq!(spec.policy.stop_signal, Signal::KILL);
    assert_eq!(spec.policy.reload_signal.number(), libc::SIGUSR1);
    let spec = service(&format!(
        "{EXEC}stop-signal = \"STOP\"\nreload-signal = \"RTMIN+3\"\n"
    ));
    assert_eq!(spec.policy.stop_signal.number(), libc::SIGSTOP);
    assert_eq!(spec.policy.reload_signal.number(), libc::SIGRTMIN() + 3);
    assert_eq!(
        service(&format!("{EXEC}stop-signal = 0x0f"))
            .policy
            .stop_signal,
        Signal::TERM
    );
}

#[test]
fn signal_zero_in_a_file_is_refused() {
    assert_eq!(
        message(&format!("{EXEC}stop-signal = 0")),
        format!(
            "/etc/adoptd/services/web.toml:2: stop-signal: invalid signal \"0\": 0 is not a signal number (use 1 to {})",
            libc::SIGRTMAX()
        )
    );
    assert!(
        message(&format!("{EXEC}reload-signal = \"TERMINATE\"")).contains("unknown signal name")
    );
    assert!(
        message(&format!("{EXEC}stop-signal = 99999999999999999999"))
            .contains("is not a signal number")
    );
}

#[test]
fn relative_chroot_is_reported_at_its_line() {
    let error = parse_error(
        "web",
        &format!("{EXEC}user = \"www\"\n\nchroot = \"srv/web\"\n"),
    );
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/web.toml:4: chroot: must be an absolute path (\"srv/web\" is relative)"
    );
    assert_eq!(error.column, Some(10));
}

#[test]
fn working_directory_and_pid_file_must_be_absolute() {
    for key in ["working-directory", "pid-file", "chroot"] {
        let error = parse_error("web", &format!("{EXEC}{key} = \"x\""));
        assert!(
            matches!(error.kind, ConfigErrorKind::RelativePath { .. }),
            "{key}"
        );
        assert_eq!(error.key.as_deref(), Some(key));
        let error = parse_error("web", &format!("{EXEC}{key} = \"/a\\u0000b\""));
        assert!(matches!(error.kind, ConfigErrorKind::Nul), "{key}");
    }
}

#[test]
fn user_and_group_refuse_colon_nul_and_empty() {
    for key in ["user", "group"] {
        assert!(matches!(
            parse_error("web", &format!("{EXEC}{key} = \"\"")).kind,
            ConfigErrorKind::Empty
        ));
        assert!(matches!(
            parse_error("web", &format!("{EXEC}{key} = \"www:www\"")).kind,
            ConfigErrorKind::Colon
        ));
        assert!(matches!(
            parse_error("web", &format!("{EXEC}{key} = \"w\\u0000\"")).kind,
            ConfigErrorKind::Nul
        ));
    }
    assert_eq!(
        service(&format!("{EXEC}user = \"1000\"")).user(),
        Some("1000")
    );
}

#[test]
fn environment_section_form_is_read() {
    let spec = service(&format!(
        "{EXEC}[environment]\nLANG = \"C.UTF-8\"\nPATH = \"/usr/bin:/bin\"\n"
    ));
    assert_eq!(spec.environment().len(), 2);
    assert_eq!(spec.environment()["PATH"], "/usr/bin:/bin");
}

#[test]
fn environment_names_must_be_valid() {
    for name in [
        "\"1X\"",
        "\"A-B\"",
        "\"A B\"",
        "\"\"",
        "\"A=B\"",
        "\"\u{e9}\"",
    ] {
        let error = parse_error(
            "web",
            &format!("{EXEC}[environment]\nOK = \"1\"\n{name} = \"x\"\n"),
        );
        assert!(
            matches!(error.kind, ConfigErrorKind::EnvironmentName { .. }),
            "{name}"
        );
        assert_eq!(error.line, Some(4));
    }
}

#[test]
fn the_invocation_id_cannot_be_set_by_a_service_file() {
    assert_eq!(
        message(&format!(
            "{EXEC}environment = {{ LANG = \"C\", ADOPTD_INVOCATION_ID = \"x\" }}"
        )),
        "/etc/adoptd/services/web.toml:2: environment: ADOPTD_INVOCATION_ID is set by adoptd itself, to a new value for each start"
    );
}

#[test]
fn environment_values_must_be_strings_without_nul() {
    assert_eq!(
        message(&format!("{EXEC}environment = {{ PORT = 8080 }}")),
        "/etc/adoptd/services/web.toml:2: environment.PORT: must be a string, found an integer (quote it)"
    );
    assert!(matches!(
        parse_error(
            "web",
            &format!("{EXEC}environment = {{ A = \"x\\u0000\" }}")
        )
        .kind,
        ConfigErrorKind::Nul
    ));
    assert!(matches!(
        parse_error("web", &format!("{EXEC}environment.A.B = \"x\"")).kind,
        ConfigErrorKind::EnvironmentValue { found: "a table" }
    ));
}

#[test]
fn autostart_must_be_a_boolean() {
    assert_eq!(
        message(&format!("{EXEC}autostart = \"false\"")),
        "/etc/adoptd/services/web.toml:2: autostart: expected true or false (without quotes), found a string"
    );
}

#[test]
fn wrong_types_are_refused_for_every_key() {
    let wrong_values = [
        "42",
        "true",
        "1.5",
        "1979-05-27",
        "[1]",
        "{ a = 1 }",
        "\"text\"",
    ];
    for key in TOP_LEVEL_KEYS {
        for value in wrong_values {
            let text = format!("{EXEC}{key} = {value}\n");
            let text = if *key == "exec" {
                format!("{key} = {value}\n")
            } else {
                text
            };
            let result = parse("web@", &text);
            let accepted = matches!(
                (*key, value),
                ("description" | "user" | "group", "\"text\"")
                    | ("stop-signal" | "reload-signal" | "output-buffer", "42")
                    | (
                        "restart-delay" | "stop-timeout" | "start-timeout",
                        "42" | "1.5"
                    )
                    | ("autostart", "true")
            );
            assert_eq!(result.is_ok(), accepted, "{key} = {value}: {result:?}");
            if let Err(error) = result {
                assert!(error.key.is_some(), "{key} = {value}: {error}");
                assert!(error.line.is_some(), "{key} = {value}: {error}");
            }
        }
    }
}

#[test]
fn instances_in_a_plain_service_is_an_error() {
    assert_eq!(
        message(&format!("{EXEC}instances = [\"a\"]")),
        "/etc/adoptd/services/web.toml:2: instances: instances are only allowed in a template (rename the file to \"web@.toml\" to make it one)"
    );
}

#[test]
fn instance_specifier_in_a_plain_service_is_an_error() {
    let error = parse_error(
        "web",
        "exec = [\"/usr/sbin/nginx\", \"-c\", \"/etc/%i.conf\"]",
    );
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/web.toml:1: exec: %i is only meaningful in a template file NAME@.toml (rename the file to \"web@.toml\", or write %%i for a literal \"%i\")"
    );
    for key in [
        "description",
        "user",
        "group",
        "chroot",
        "working-directory",
        "pid-file",
    ] {
        let error = parse_error("web", &format!("{EXEC}{key} = \"/x/%i\""));
        assert!(
            matches!(
                error.kind,
                ConfigErrorKind::InstanceSpecifierOutsideTemplate { .. }
            ),
            "{key}"
        );
    }
    let error = parse_error("web", &format!("{EXEC}environment = {{ A = \"%i\" }}"));
    assert_eq!(error.key.as_deref(), Some("environment.A"));
}

#[test]
fn double_percent_is_a_literal_percent_and_other_percents_stay() {
    let spec = service("exec = [\"/bin/date\", \"+%Y-%m-%d\", \"100%\", \"%%i\", \"%%%%\"]");
    assert_eq!(spec.exec, ["/bin/date", "+%Y-%m-%d", "100%", "%i", "%%"]);
}

#[test]
fn what_a_service_leaves_unset_costs_no_box() {
    assert!(service(EXEC).uncommon.is_none());
    let spec = service(&format!("{EXEC}user = \"www-data\"\n"));
    assert_eq!(spec.user(), Some("www-data"));
    assert!(spec.uncommon.is_some());
}

#[test]
fn a_spec_is_serialized_flat_and_read_back_the_same() {
    let plain = service(EXEC);
    let full = service(&format!(
        "{EXEC}chroot = \"/srv/web\"\nuser = \"www-data\"\ngroup = \"www-data\"\n\
         working-directory = \"/\"\nenvironment = {{ LANG = \"C\" }}\npid-file = \"/run/web.pid\"\n"
    ));
    let instance = ServiceSpec::refused(
        "apache2@one",
        Path::new("/etc/adoptd/services/apache2@.toml"),
    );
    for spec in [plain, full, instance] {
        let json = serde_json::to_value(&spec).unwrap();
        // The layout a re-exec from or to an adoptd before the box reads.
        for key in [
            "name",
            "template",
            "instance",
            "chroot",
            "user",
            "group",
            "working_directory",
            "environment",
            "pid_file",
            "exec",
            "policy",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        let back: ServiceSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.uncommon.is_none(), spec.uncommon.is_none());
    }
}
