//! The D-Bus API against a real dbus-daemon set up as Debian's system bus
//! with adoptd's policy file, real busctl, zbus proxies and real
//! daemonizing processes.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::collections::HashMap;

use adoptd_dbus::{
    BUS_NAME, Error, MANAGER_INTERFACE, MANAGER_PATH, ManagerProxy, SERVICE_INTERFACE,
    ServiceProxy, State, introspection::interface_members,
};
use adoptd_test_support::{
    bus::{TestBus, block_on},
    *,
};

/// A dance service that daemonizes with two hops, as daemon(3) users do.
fn double_fork_service(scratch: &Scratch, reports: &Reports, name: &str) {
    scratch.service(
        name,
        &format!(
            "exec = {}\nrestart = \"no\"\ndescription = \"dancer {name}\"\n",
            dance_exec(reports, name, &["fork", "setsid", "fork", "serve"])
        ),
    );
}

/// adoptd on `bus` with the exact source where the machine has one (as
/// root, the process connector), and a watch:
/// procfs cannot name an adoptee's previous parent, and on a schedule
/// where both hops of a double fork fall in one moment it picks the heir
/// by its clues, as MainPIDSource `guess`.
fn exact_adoptd(bus: &TestBus, scratch: &Scratch) -> (Adoptd, Watch) {
    let tracker = trackers().pop().unwrap_or_else(|| "procfs".to_owned());
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address, "--tracker", &tracker]);
    let watch = adoptd.watch(&bus.address);
    (adoptd, watch)
}

/// Whether an `Exited` signal of `service` came so far.
fn exited(watch: &mut Watch, service: &str) -> bool {
    watch.catch_up();
    watch
        .seen
        .iter()
        .any(|signal| matches!(signal, Signal::Exited { service: s, .. } if s == service))
}

fn service_path(name: &str) -> String {
    adoptd_dbus::service_path(name).to_string()
}

/// A property of a service as busctl prints it: `u 1234`.
fn property(bus: &TestBus, name: &str, property: &str) -> String {
    bus.busctl(&[
        "get-property",
        BUS_NAME,
        &service_path(name),
        SERVICE_INTERFACE,
        property,
    ])
    .trim()
    .to_owned()
}

async fn connect(bus: &TestBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the test bus")
}

/// The introspection of `path`, as comparable lines by interface.
fn live_members(
    bus: &TestBus,
    path: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let xml = bus.busctl(&[
        "--json=short",
        "call",
        BUS_NAME,
        path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
    ]);
    // {"type":"s","data":["<xml…>"]}
    let xml = xml
        .split_once("\"data\":[\"")
        .and_then(|(_, rest)| rest.rsplit_once("\"]"))
        .map(|(xml, _)| unescape_json(xml))
        .expect("busctl's JSON");
    interface_members(&xml).expect("readable introspection")
}

fn unescape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let code: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&code, 16).expect("\\u escape");
                out.push(char::from_u32(code).unwrap_or('?'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[test]
fn live_introspection_equals_the_contract() {
    let scratch = Scratch::new("introspect");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    scratch.service(
        "web@",
        &format!(
            "exec = {}\nrestart = \"no\"\ndescription = \"dancer %i\"\ninstances = [\"one\"]\n",
            dance_exec(&reports, "web", &["fork", "setsid", "fork", "serve"])
        ),
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    reports.next();

    let contract = interface_members(adoptd_dbus::INTROSPECTION_XML).expect("the contract");
    let manager = live_members(&bus, MANAGER_PATH);
    assert_eq!(manager[MANAGER_INTERFACE], contract[MANAGER_INTERFACE]);
    assert!(manager.contains_key("org.freedesktop.DBus.ObjectManager"));
    let service = live_members(&bus, &service_path("web@one"));
    assert_eq!(service[SERVICE_INTERFACE], contract[SERVICE_INTERFACE]);

    let tree = bus.busctl(&["tree", BUS_NAME]);
    assert!(tree.contains("/org/adoptd1/service/web_40one"), "{tree}");
    let introspect = bus.busctl(&["introspect", BUS_NAME, &service_path("web@one")]);
    assert!(introspect.contains(".MainPID"), "{introspect}");
    assert_eq!(property(&bus, "web@one", "Template"), "s \"web\"");
    assert_eq!(property(&bus, "web@one", "Instance"), "s \"one\"");
    assert_eq!(property(&bus, "web@one", "Description"), "s \"dancer one\"");
    watch.wait_status("web@one", "two hand-offs", |status| {
        status.state == State::Running && status.handoffs == 2
    });
}

#[test]
fn main_pid_and_previous_pid_follow_a_double_forking_daemon() {
    let scratch = Scratch::new("follow");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    let (_adoptd, mut watch) = exact_adoptd(&bus, &scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);

    assert_eq!(
        property(&bus, "dancer", "MainPID"),
        format!("u {}", settled.pid)
    );
    assert_eq!(
        property(&bus, "dancer", "PreviousPID"),
        format!("u {}", settled.last_parent)
    );
    assert_eq!(property(&bus, "dancer", "State"), "s \"running\"");
    assert_eq!(property(&bus, "dancer", "MainPIDSource"), "s \"adoption\"");
    assert_eq!(property(&bus, "dancer", "Handoffs"), "u 2");
    assert_eq!(property(&bus, "dancer", "ExitCode"), "i -1");
    let pids = property(&bus, "dancer", "PIDs");
    assert_eq!(pids, format!("au 1 {}", settled.pid));

    let rows = bus.busctl(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "ListServices",
    ]);
    let since = property(&bus, "dancer", "StateChangeTimestamp");
    let since = since.strip_prefix("t ").expect("a timestamp");
    assert_eq!(
        rows.trim(),
        format!(
            "a(ssuutso) 1 \"dancer\" \"running\" {} {} {since} \"loaded\" \"/org/adoptd1/service/dancer\"",
            settled.pid, settled.last_parent
        )
    );

    // Stopping shows the end of the run in the properties too.
    bus.busctl(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "StopService",
        "s",
        "dancer",
    ]);
    watch.wait_ended("dancer", State::Stopped);
    assert_eq!(property(&bus, "dancer", "MainPID"), "u 0");
    assert_eq!(property(&bus, "dancer", "State"), "s \"stopped\"");
    assert_eq!(property(&bus, "dancer", "ExitCode"), "i 0");
}

#[test]
fn a_restart_is_seen_as_one_properties_changed_and_adopted() {
    let scratch = Scratch::new("restart");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    let (_adoptd, mut watch) = exact_adoptd(&bus, &scratch);
    let first = reports.next();
    watch.wait_main_pid("dancer", first.pid);
    let monitor = bus.monitor(&[BUS_NAME]);

    let path = service_path("dancer");
    let (adopted, changes) = block_on(async {
        let connection = connect(&bus).await;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(BUS_NAME)
            .path(path.as_str())
            .build()
            .expect("a match rule");
        let mut signals = zbus::MessageStream::for_match_rule(rule, &connection, None)
            .await
            .expect("subscribe");
        let manager = ManagerProxy::new(&connection).await.expect("proxy");
        manager
            .restart_service("dancer")
            .await
            .expect("RestartService");
        let settled = tokio::task::spawn_blocking(move || reports.next())
            .await
            .expect("the dance report");
        let mut changes: Vec<HashMap<String, String>> = Vec::new();
        let mut adopted = None;
        use futures_util::StreamExt as _;
        while let Some(message) = signals.next().await {
            let message = message.expect("a message");
            let header = message.header();
            match header.member().map(|m| m.as_str()) {
                Some("PropertiesChanged") => {
                    let (_, changed, _): (
                        String,
                        HashMap<String, zbus::OwnedVariant>,
                        Vec<String>,
                    ) = message.body().deserialize().expect("PropertiesChanged");
                    changes.push(
                        changed
                            .into_iter()
                            .map(|(k, v)| (k, format!("{v:?}")))
                            .collect(),
                    );
                }
                Some("Adopted") => {
                    let (pid, previous): (u32, u32) =
                        message.body().deserialize().expect("Adopted");
                    if pid == settled.pid {
                        adopted = Some((pid, previous, settled.clone()));
                    }
                }
                _ => {}
            }
            let main_pid_seen = changes.iter().any(|c| {
                c.get("MainPID")
                    .is_some_and(|v| v.contains(&settled.pid.to_string()))
            });
            if adopted.is_some() && main_pid_seen {
                break;
            }
        }
        (adopted.expect("an Adopted signal"), changes)
    });
    let (pid, previous, settled) = adopted;
    assert_eq!((pid, previous), (settled.pid, settled.last_parent));
    assert_ne!(settled.pid, first.pid);
    // The hand-off's one signal carries MainPID and PreviousPID together.
    let handoff = changes
        .iter()
        .find(|c| {
            c.get("MainPID")
                .is_some_and(|v| v.contains(&settled.pid.to_string()))
        })
        .expect("a PropertiesChanged with the new MainPID");
    let previous_pid = handoff.get("PreviousPID").expect("PreviousPID alongside");
    assert!(
        previous_pid.contains(&settled.last_parent.to_string()),
        "{handoff:?}"
    );
    assert!(handoff.contains_key("Handoffs"), "{handoff:?}");
    // No signal names a property twice, and none is empty.
    assert!(changes.iter().all(|c| !c.is_empty()), "{changes:?}");

    let seen = monitor.wait_for("Adopted in busctl monitor", |line| {
        line.contains("Member=Adopted")
    });
    assert!(!seen.is_empty());
}

#[test]
fn nobody_reads_everything_and_controls_nothing() {
    if !is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let scratch = Scratch::new("nobody");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    let (_adoptd, mut watch) = exact_adoptd(&bus, &scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);
    let path = service_path("dancer");
    let nobody = |args: &[&str]| bus.busctl_output(args, Some("nobody"));

    let read = nobody(&[
        "get-property",
        BUS_NAME,
        &path,
        SERVICE_INTERFACE,
        "MainPID",
    ]);
    assert!(read.status.success(), "{read:?}");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        format!("u {}", settled.pid)
    );
    for args in [
        &[
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "ListServices",
        ][..],
        &["introspect", BUS_NAME, &path],
        &["tree", BUS_NAME],
        &["get-property", BUS_NAME, &path, SERVICE_INTERFACE, "PIDs"],
    ] {
        let output = nobody(args);
        assert!(output.status.success(), "{args:?}: {output:?}");
    }

    for args in [
        &[
            "call",
            BUS_NAME,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "StopService",
            "s",
            "dancer",
        ][..],
        &["call", BUS_NAME, &path, SERVICE_INTERFACE, "Stop"],
        &["call", BUS_NAME, &path, SERVICE_INTERFACE, "Kill", "i", "9"],
        &["call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "Reload"],
    ] {
        let output = nobody(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was allowed");
        assert!(
            stderr.contains("Only root may control adoptd's services"),
            "{args:?}: {stderr}"
        );
    }
    let own = nobody(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
        "su",
        BUS_NAME,
        "4",
    ]);
    assert!(!own.status.success(), "nobody may own {BUS_NAME}");
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("denied"),
        "{own:?}"
    );

    // The service never noticed.
    assert!(is_alive(settled.pid));
    assert_eq!(
        property(&bus, "dancer", "MainPID"),
        format!("u {}", settled.pid)
    );
    assert!(!exited(&mut watch, "dancer"));
}

#[test]
fn restarting_the_bus_loses_nothing() {
    let scratch = Scratch::new("busloss");
    let Some(mut bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    let (_adoptd, mut watch) = exact_adoptd(&bus, &scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);
    let before = property(&bus, "dancer", "MainPID");

    bus.restart();
    // adoptd owns its name on the new bus once it has published again.
    let _watch = Watch::connect(&bus.address);

    assert_eq!(property(&bus, "dancer", "MainPID"), before);
    assert_eq!(
        property(&bus, "dancer", "PreviousPID"),
        format!("u {}", settled.last_parent)
    );
    let tree = bus.busctl(&["tree", BUS_NAME]);
    assert!(tree.contains("/org/adoptd1/service/dancer"), "{tree}");
    assert!(is_alive(settled.pid));
}

#[test]
fn bad_input_gets_the_contracts_errors_and_disturbs_nothing() {
    let scratch = Scratch::new("badinput");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    scratch.service(
        "web@",
        &format!("exec = {}\n", argv(&["/bin/sleep", "1000"])),
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let settled = reports.next();
    watch.wait_main_pid("dancer", settled.pid);

    block_on(async {
        let connection = connect(&bus).await;
        let manager = ManagerProxy::new(&connection).await.expect("proxy");
        match manager.get_service("nope").await {
            Err(Error::NoSuchService(_)) => {}
            other => panic!("GetService(nope): {other:?}"),
        }
        match manager.start_service("nope").await {
            Err(Error::NoSuchService(_)) => {}
            other => panic!("StartService(nope): {other:?}"),
        }
        match manager.start_service("web@../x").await {
            Err(Error::InvalidName(_)) => {}
            other => panic!("StartService(web@../x): {other:?}"),
        }
        let huge = "x".repeat(1 << 20);
        match manager.start_service(&huge).await {
            Err(Error::InvalidName(text)) => assert!(text.len() < 200, "{text}"),
            other => panic!("StartService(1 MB): {other:?}"),
        }
        let service = ServiceProxy::builder(&connection)
            .path(service_path("dancer"))
            .build()
            .await
            .expect("proxy");
        for signal in [0, -1, 999] {
            match service.kill(signal).await {
                Err(Error::ZBus(zbus::Error::MethodError(name, _, _))) => {
                    assert_eq!(name.as_str(), "org.freedesktop.DBus.Error.InvalidArgs")
                }
                Err(Error::ZBus(zbus::Error::FDO(e)))
                    if matches!(*e, zbus::fdo::Error::InvalidArgs(_)) => {}
                other => panic!("Kill({signal}): {other:?}"),
            }
        }
        match service.start().await {
            Err(Error::AlreadyRunning(_)) => {}
            other => panic!("Start of a running service: {other:?}"),
        }
        let wrong = connection
            .call_method(
                Some(BUS_NAME),
                MANAGER_PATH,
                Some(MANAGER_INTERFACE),
                "GetService",
                &(42u32,),
            )
            .await;
        match wrong {
            Err(zbus::Error::MethodError(name, _, _)) => {
                assert_eq!(name.as_str(), "org.freedesktop.DBus.Error.InvalidArgs")
            }
            Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::InvalidArgs(_)) => {}
            other => panic!("GetService(u): {other:?}"),
        }
    });

    // Nothing happened to the service.
    assert!(is_alive(settled.pid));
    assert_eq!(
        property(&bus, "dancer", "MainPID"),
        format!("u {}", settled.pid)
    );
    assert!(!exited(&mut watch, "dancer"));
}

#[test]
fn setting_a_property_is_refused_as_read_only_or_unknown() {
    let scratch = Scratch::new("setprop");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service(
        "web",
        &format!("exec = {}\n", argv(&["/bin/sleep", "1000"])),
    );
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    let pid = watch.wait_state("web", State::Running).main_pid;
    let web = service_path("web");

    // Every property of the contract is read-only, and the error says so.
    let refused = bus.busctl_output(
        &[
            "set-property",
            BUS_NAME,
            &web,
            SERVICE_INTERFACE,
            "MainPID",
            "u",
            "1",
        ],
        None,
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Property 'MainPID' is read-only"), "{said}");

    block_on(async {
        let connection = connect(&bus).await;
        let set = |path: String, interface: &'static str, property: &'static str| {
            let connection = connection.clone();
            async move {
                let value = zbus::Variant::from("x");
                let answer = connection
                    .call_method(
                        Some(BUS_NAME),
                        path.as_str(),
                        Some("org.freedesktop.DBus.Properties"),
                        "Set",
                        &(interface, property, value),
                    )
                    .await;
                match answer {
                    Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
                    Err(zbus::Error::FDO(e)) => zbus::DBusError::name(&*e).to_string(),
                    other => panic!("Set({interface}, {property}): {other:?}"),
                }
            }
        };
        for (path, interface, property, error) in [
            (web.clone(), SERVICE_INTERFACE, "State", "PropertyReadOnly"),
            (web.clone(), SERVICE_INTERFACE, "PIDs", "PropertyReadOnly"),
            (web.clone(), SERVICE_INTERFACE, "Nope", "UnknownProperty"),
            (
                MANAGER_PATH.to_owned(),
                MANAGER_INTERFACE,
                "Version",
                "PropertyReadOnly",
            ),
            (
                MANAGER_PATH.to_owned(),
                "org.freedesktop.DBus.Peer",
                "Version",
                "UnknownProperty",
            ),
        ] {
            assert_eq!(
                set(path, interface, property).await,
                format!("org.freedesktop.DBus.Error.{error}"),
                "Set({interface}, {property})"
            );
        }
    });

    // Nothing changed.
    assert_eq!(property(&bus, "web", "MainPID"), format!("u {pid}"));
    assert!(is_alive(pid));
}

#[test]
fn starting_a_template_instance_adds_its_object() {
    let scratch = Scratch::new("instance");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service(
        "web@",
        &format!("exec = {}\n", argv(&["/bin/sleep", "1000"])),
    );
    let (_adoptd, _watch) = bus.adoptd(&scratch);
    let (path, added) = block_on(async {
        let connection = connect(&bus).await;
        let manager = ManagerProxy::new(&connection).await.expect("proxy");
        let mut added = manager.receive_service_added().await.expect("ServiceAdded");
        let path = manager
            .start_service("web@two")
            .await
            .expect("StartService");
        use futures_util::StreamExt as _;
        let signal = added.next().await.expect("a ServiceAdded signal");
        let args = signal.args().expect("arguments");
        (
            (path.to_string()),
            (args.name.to_owned(), args.path.to_string()),
        )
    });
    assert_eq!(path, "/org/adoptd1/service/web_40two");
    assert_eq!(added, ("web@two".to_owned(), path.clone()));
    // The object is there as soon as the method answered.
    assert_eq!(property(&bus, "web@two", "Name"), "s \"web@two\"");
}

#[test]
fn the_private_bus_works_without_a_system_bus() {
    if std::process::Command::new("busctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: busctl is not installed (Debian package systemd)");
        return;
    }
    let scratch = Scratch::new("private");
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "one");
    double_fork_service(&scratch, &reports, "two");
    // Never the real adoptd's place (/run/adoptd, the user's runtime dir).
    let runtime = scratch.file("run");
    let mut adoptd = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_adoptd"))
            .arg("--private-bus")
            .env(adoptd_dbus::RUNTIME_DIR_VARIABLE, &runtime)
            .arg("--config-dir")
            .arg(scratch.services())
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/system_bus_socket",
            )
            .env("ADOPTD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start adoptd --private-bus"),
    );
    let stdout = adoptd.0.stdout.take().expect("stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).ok();
        sender.send(line).ok();
    });
    let line = lines.recv_timeout(TIMEOUT).expect("the printed address");
    let address = line
        .trim()
        .strip_prefix("ADOPTD_BUS_ADDRESS=")
        .unwrap_or_else(|| panic!("not an address line: {line:?}"))
        .to_owned();
    assert_eq!(
        address,
        adoptd_dbus::private_bus_address(&runtime.join("bus"))
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&runtime)
            .expect("the socket directory")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
    reports.collect(2);

    let rows = block_on(async {
        let connection = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .expect("connect to the private bus");
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.expect("proxy");
        let mut owners = dbus
            .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
            .await
            .expect("NameOwnerChanged");
        let name = zbus::names::BusName::try_from(BUS_NAME).expect("name");
        if !dbus.name_has_owner(name).await.expect("NameHasOwner") {
            use futures_util::StreamExt as _;
            owners.next().await.expect("adoptd to own its name");
        }
        let manager = ManagerProxy::new(&connection).await.expect("proxy");
        manager.list_services().await.expect("ListServices")
    });
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    let tree = std::process::Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(["tree", BUS_NAME])
        .output()
        .expect("busctl tree");
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("/org/adoptd1/service/one"), "{tree}");
    assert!(tree.contains("/org/adoptd1/service/two"), "{tree}");

    signal(adoptd.0.id(), libc::SIGTERM);
    let pidfd = Pidfd::open(adoptd.0.id()).expect("pidfd");
    assert!(pidfd.wait_exit(TIMEOUT), "adoptd did not stop");
    assert!(adoptd.0.wait().expect("wait").success());
}

/// A child that a failing test does not leave behind (it would hold the
/// private bus socket for the next run).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // Its services go with it: nothing of a failed test stays.
            let tree = descendants(self.0.id());
            let _ = self.0.kill();
            let _ = self.0.wait();
            for process in tree {
                process.kill();
            }
        }
    }
}

#[test]
fn pids_lists_an_orphan_adopted_without_any_death_of_adoptds_children() {
    // The orphan step's grandchild is reparented to adoptd when its parent
    // (reaped by the dance, not by adoptd) ends: no signal tells adoptd.
    // Reading PIDs must still find it, under every source.
    for tracker in trackers() {
        let scratch = Scratch::new("orphan-pids");
        let Some(bus) = TestBus::or_skip(&scratch) else {
            return;
        };
        let reports = Reports::bind(&scratch);
        dance_service(
            &scratch,
            &reports,
            "web",
            "",
            // The pause puts the orphaning after the hand-off's moment.
            &["fork", "setsid", "sleep:300", "orphan", "serve"],
        );
        let adoptd = Adoptd::start_tracker(&scratch, &tracker, &["--address", &bus.address]);
        let mut watch = adoptd.watch(&bus.address);
        let settled = reports.next();
        watch.wait_main_pid("web", settled.pid);
        let pids = property(&bus, "web", "PIDs");
        let listed: Vec<u32> = pids
            .split_whitespace()
            .skip(2)
            .filter_map(|p| p.parse().ok())
            .collect();
        for (child, zombie) in children_of(adoptd.pid()) {
            if !zombie {
                assert!(
                    listed.contains(&child),
                    "{tracker}: {child} missing from {pids}"
                );
            }
        }
        assert!(
            listed.len() >= 2,
            "{tracker}: the daemon and the orphan: {pids}"
        );
    }
}

/// adoptd's `started PROGRAM ARGS…` line of the service `victim`.
fn started_victim(line: &LogLine) -> bool {
    line.message.starts_with("started ") && line.get("service") == Some("victim")
}

#[test]
fn clients_reading_pids_in_a_loop_do_not_hold_back_another_services_restarts() {
    // Reads are open to every local user: a loop of them must cost the
    // readers, never the supervision of the other services.
    let scratch = Scratch::new("pids-read-load");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    dance_service(
        &scratch,
        &reports,
        "crowd",
        "expect = \"foreground\"",
        &["workers:200", "report", "serve"],
    );
    scratch.service(
        "victim",
        "exec = [\"/bin/sleep\", \"100000\"]\nexpect = \"foreground\"\n\
         restart = \"always\"\nrestart-delay = \"0\"\n\
         start-limit = { burst = 1000, interval = \"1s\" }\n",
    );
    let mut adoptd = Adoptd::start(&scratch, &["--address", &bus.address]);
    reports.next();
    let mut victim = adoptd
        .wait_for("the victim's start", started_victim)
        .pid("pid");
    adoptd.wait_for("the name on the bus", |l| {
        l.message.starts_with("published as")
    });

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, reads) = (stop.clone(), reads.clone());
            let address = bus.address.clone();
            std::thread::spawn(move || {
                block_on(async move {
                    let connection = zbus::connection::Builder::address(address.as_str())
                        .build()
                        .await
                        .expect("connect to the test bus");
                    let crowd = ServiceProxy::builder(&connection)
                        .path(service_path("crowd"))
                        .build()
                        .await
                        .expect("a proxy");
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let pids = crowd.pids().await.expect("PIDs");
                        assert!(pids.len() > 200, "{} members", pids.len());
                        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
        })
        .collect();
    let count = || reads.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reader got an answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // Five restarts, each waited for, while the reads go on.
    let before = count();
    for _ in 0..5 {
        signal(victim, libc::SIGKILL);
        victim = adoptd
            .wait_next("the victim's restart", started_victim)
            .pid("pid");
    }
    // The readers were reading all along, and are still served.
    while count() <= before {
        assert!(
            std::time::Instant::now() < deadline + TIMEOUT,
            "the readers were not served any more"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("a reader");
    }
}

/// Every service's `PIDs` in one `GetManagedObjects`, by name.
fn managed_pids(bus: &TestBus) -> HashMap<String, Vec<u32>> {
    block_on(async {
        let connection = connect(bus).await;
        let manager = zbus::fdo::ObjectManagerProxy::builder(&connection)
            .destination(BUS_NAME)
            .path(MANAGER_PATH)
            .build()
            .await
            .expect("an ObjectManager proxy");
        let objects = manager
            .get_managed_objects()
            .await
            .expect("GetManagedObjects");
        let mut pids = HashMap::new();
        for interfaces in objects.values() {
            let Some(service) = interfaces
                .iter()
                .find(|(name, _)| name.as_str() == SERVICE_INTERFACE)
                .map(|(_, properties)| properties)
            else {
                continue;
            };
            let get = |property: &str| {
                service
                    .get(property)
                    .and_then(|value| value.try_clone().ok())
                    .unwrap_or_else(|| panic!("no {property} in {service:?}"))
            };
            let name = String::try_from(get("Name")).expect("Name is a string");
            let listed = Vec::<u32>::try_from(get("PIDs")).expect("PIDs is au");
            pids.insert(name, listed);
        }
        pids
    })
}

/// A service's `PIDs` read alone, as busctl prints it: `au N PID…`.
fn pids_alone(bus: &TestBus, name: &str) -> Vec<u32> {
    property(bus, name, "PIDs")
        .split_whitespace()
        .skip(2)
        .map(|pid| pid.parse().expect("a pid"))
        .collect()
}

#[test]
fn get_managed_objects_names_each_services_processes_even_just_after_a_restart() {
    // One GetManagedObjects reads every service's processes at once: each
    // object says what its own PIDs says, and a service that restarted
    // since the last such call is read anew, never from the older reading.
    let scratch = Scratch::new("managed-pids");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let reports = Reports::bind(&scratch);
    double_fork_service(&scratch, &reports, "dancer");
    scratch.service(
        "crowd",
        &format!(
            "exec = {}\nexpect = \"foreground\"\n",
            dance_exec(&reports, "crowd", &["workers:3", "serve"])
        ),
    );
    scratch.service("idle", "exec = [\"/bin/true\"]\nautostart = false\n");
    let (_adoptd, mut watch) = exact_adoptd(&bus, &scratch);
    let mut settled = HashMap::new();
    for _ in 0..2 {
        let report = reports.next();
        settled.insert(report.tag.clone(), report);
    }
    watch.wait_main_pid("dancer", settled["dancer"].pid);
    let crowd = watch.wait_main_pid("crowd", settled["crowd"].pid);

    let managed = managed_pids(&bus);
    for name in ["dancer", "crowd", "idle"] {
        assert_eq!(managed[name], pids_alone(&bus, name), "{name}");
    }
    assert_eq!(managed["dancer"], vec![settled["dancer"].pid]);
    assert_eq!(managed["crowd"].len(), 4, "{:?}", managed["crowd"]);
    assert!(managed["idle"].is_empty());

    block_on(async {
        let connection = connect(&bus).await;
        ServiceProxy::builder(&connection)
            .path(service_path("crowd"))
            .build()
            .await
            .expect("a proxy")
            .restart()
            .await
            .expect("Restart");
    });
    let again = reports.next();
    watch.wait_main_pid("crowd", again.pid);
    let managed = managed_pids(&bus);
    assert!(managed["crowd"].contains(&again.pid), "{managed:?}");
    assert!(!managed["crowd"].contains(&crowd.main_pid), "{managed:?}");
    assert_eq!(managed["dancer"], vec![settled["dancer"].pid]);
}
