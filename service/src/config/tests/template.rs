use super::*;

// --- templates ---

const APACHE: &str = r#"
description = "Apache in chroot %i"
exec = ["/usr/sbin/apache2", "-f", "/srv/%i/apache2.conf", "-k", "start"]
expect = "auto"
restart = "on-failure"
restart-delay = "100ms"
start-limit = { burst = 5, interval = "10s" }
stop-signal = "TERM"
stop-timeout = "10s"
reload-signal = "HUP"
chroot = "/srv/%i"
user = "www-%i"
group = "grp-%i"
working-directory = "/%i"
environment = { LANG = "C", SITE = "%i", LITERAL = "100%%" }
pid-file = "/run/apache2-%i.pid"
autostart = true
instances = ["chroot1", "chroot2"]
"#;

#[test]
fn design_example_template_parses() {
    let template = template("apache2@", APACHE);
    assert_eq!(template.name, "apache2");
    assert_eq!(
        template.source,
        Path::new("/etc/adoptd/services/apache2@.toml")
    );
    assert_eq!(template.instances, ["chroot1", "chroot2"]);
}

#[test]
fn template_substitutes_instance_everywhere() {
    let spec = template("apache2@", APACHE)
        .instantiate("site.example")
        .unwrap();
    assert_eq!(spec.name, "apache2@site.example");
    assert_eq!(spec.template(), Some("apache2"));
    assert_eq!(spec.instance(), Some("site.example"));
    assert_eq!(spec.source, Path::new("/etc/adoptd/services/apache2@.toml"));
    assert_eq!(spec.description, "Apache in chroot site.example");
    assert_eq!(
        spec.exec,
        [
            "/usr/sbin/apache2",
            "-f",
            "/srv/site.example/apache2.conf",
            "-k",
            "start"
        ]
    );
    assert_eq!(
        spec.chroot().map(Path::to_path_buf),
        Some(PathBuf::from("/srv/site.example"))
    );
    assert_eq!(spec.user(), Some("www-site.example"));
    assert_eq!(spec.group(), Some("grp-site.example"));
    assert_eq!(
        spec.working_directory().map(Path::to_path_buf),
        Some(PathBuf::from("/site.example"))
    );
    assert_eq!(spec.environment()["SITE"], "site.example");
    assert_eq!(spec.environment()["LITERAL"], "100%");
    assert_eq!(
        spec.pid_file().map(Path::to_path_buf),
        Some(PathBuf::from("/run/apache2-site.example.pid"))
    );
}

#[test]
fn template_without_instance_specifier_is_fine() {
    let spec = template("worker@", EXEC).instantiate("1").unwrap();
    assert_eq!(spec.name, "worker@1");
    assert_eq!(spec.exec, ["/usr/sbin/nginx"]);
}

#[test]
fn template_instantiate_refuses_bad_instance_names() {
    let template = template("apache2@", APACHE);
    for instance in [
        "",
        "a b",
        "a/b",
        "..",
        ".",
        "x@y",
        "caf\u{e9}",
        "-x",
        "--help",
    ] {
        let error = template.instantiate(instance).unwrap_err();
        assert!(
            matches!(error.kind, ConfigErrorKind::BadInstanceName { .. }),
            "{instance:?}: {error}"
        );
    }
    assert_eq!(
        template.instantiate("..").unwrap_err().to_string(),
        "/etc/adoptd/services/apache2@.toml: invalid instance name: \"..\" is not a name (\".\" and \"..\" could escape a path)"
    );
    let longest = "i".repeat(MAX_NAME_LEN - "apache2@".len());
    assert!(template.instantiate(&longest).is_ok());
    assert!(matches!(
        template
            .instantiate(&format!("{longest}i"))
            .unwrap_err()
            .kind,
        ConfigErrorKind::BadInstanceName {
            error: NameError::TooLong { .. },
            ..
        }
    ));
}

#[test]
fn template_path_that_is_relative_for_every_instance_fails_when_the_file_loads() {
    let error = parse_error("site@", &format!("{EXEC}\nchroot = \"%i/root\"\n"));
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/site@.toml:3: chroot: must be an absolute path (\"%i/root\" is relative)"
    );
    assert!(matches!(
        parse_error("site@", "exec = [\"%i\"]").kind,
        ConfigErrorKind::ExecRelative { .. }
    ));
}

#[test]
fn template_instance_that_breaks_a_value_is_refused_for_that_instance() {
    let template = template("site@", &format!("{EXEC}user = \"%i\"\n"));
    assert!(template.instantiate("www").is_ok());
    let error = template.instantiate("a:b").unwrap_err();
    assert_eq!(
        error.to_string(),
        "/etc/adoptd/services/site@.toml:2: user: for instance \"a:b\": must not contain ':' (user and group are separate keys)"
    );
}

#[test]
fn listed_instances_load_and_each_bad_one_is_its_own_error() {
    let template = template(
        "site@",
        "exec = [\"/bin/site\"]\nuser = \"%i\"\ninstances = [\n  \"a\",\n  \"b c\",\n  \"d:e\",\n  \"f\",\n]\n",
    );
    let (specs, errors) = template.instantiate_listed();
    assert_eq!(names(&specs), ["site@a", "site@f"]);
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0].to_string(),
        "/etc/adoptd/services/site@.toml:5: instances: invalid instance name: \"b c\" contains ' '; names use only letters, digits and _ . : -"
    );
    assert_eq!(errors[1].line, Some(2));
    assert!(matches!(errors[1].kind, ConfigErrorKind::Instance { .. }));
}

#[test]
fn duplicate_instance_is_an_error_and_the_first_is_kept() {
    let template = template(
        "site@",
        &format!("{EXEC}instances = [\"a\", \"b\",\n\"a\"]\n"),
    );
    let (specs, errors) = template.instantiate_listed();
    assert_eq!(names(&specs), ["site@a", "site@b"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "/etc/adoptd/services/site@.toml:3: instances: instance \"a\" is listed twice; the first is kept"
    );
}

#[test]
fn template_with_autostart_false_still_lists_its_instances() {
    let template = template(
        "site@",
        &format!("{EXEC}autostart = false\ninstances = [\"a\"]\n"),
    );
    let (specs, errors) = template.instantiate_listed();
    assert!(errors.is_empty());
    assert_eq!(names(&specs), ["site@a"]);
    assert!(!specs[0].autostart);
}

#[test]
fn instances_must_be_an_array_of_strings() {
    assert!(matches!(
        parse_error("site@", &format!("{EXEC}instances = \"a\"")).kind,
        ConfigErrorKind::WrongType { .. }
    ));
    let error = parse_error("site@", &format!("{EXEC}instances = [\"a\", 2]"));
    assert_eq!(error.key.as_deref(), Some("instances"));
    assert!(
        error
            .to_string()
            .contains("expected an instance name (a string), found an integer")
    );
}
