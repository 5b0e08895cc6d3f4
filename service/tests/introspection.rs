//! Introspection of the parent objects (`/` down to `/org/adoptd1/service`)
//! against a real dbus-daemon and real busctl: a parent lists its own
//! interfaces and its children as empty `<node name="…"/>`, whatever
//! services come and go, and busctl reads every reply without a warning.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use adoptd_dbus::{
    BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, ManagerProxy, SERVICE_INTERFACE,
    SERVICE_PATH_PREFIX, introspection::interface_members,
};
use adoptd_test_support::{
    bus::{TestBus, block_on},
    *,
};
use futures_util::StreamExt as _;

const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const PEER: &str = "org.freedesktop.DBus.Peer";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

#[test]
fn busctl_reads_the_tree_and_every_parent_without_a_warning() {
    let scratch = Scratch::new("introspect-warnings");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    for name in ["alpha", "beta", "gamma"] {
        idle_service(&scratch, name);
    }
    let _adoptd = adoptd_on(&scratch, &bus);

    let alpha = service_path("alpha");
    let tree = busctl_quietly(&bus, &["tree", BUS_NAME]);
    for name in ["alpha", "beta", "gamma"] {
        assert!(tree.contains(&service_path(name)), "{tree}");
    }
    for path in ["/", "/org", MANAGER_PATH, SERVICE_PATH_PREFIX, &alpha] {
        busctl_quietly(&bus, &["introspect", BUS_NAME, path]);
    }
    let manager = busctl_quietly(&bus, &["introspect", BUS_NAME, MANAGER_PATH]);
    assert!(manager.contains(".ListServices"), "{manager}");
    let service = busctl_quietly(&bus, &["introspect", BUS_NAME, &alpha]);
    assert!(service.contains(".MainPID"), "{service}");
}

#[test]
fn the_manager_lists_service_as_an_empty_node_and_only_its_own_interfaces() {
    let scratch = Scratch::new("introspect-manager");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "alpha");
    idle_service(&scratch, "beta");
    let _adoptd = adoptd_on(&scratch, &bus);

    let manager = introspect(&bus, MANAGER_PATH);
    assert_eq!(children(&manager), ["service"], "{manager}");
    assert_eq!(
        interfaces(&manager),
        [
            MANAGER_INTERFACE,
            INTROSPECTABLE,
            OBJECT_MANAGER,
            PEER,
            PROPERTIES
        ],
        "{manager}"
    );
    assert!(!manager.contains(SERVICE_INTERFACE), "{manager}");
    for (path, child) in [("/", "org"), ("/org", "adoptd1")] {
        let xml = introspect(&bus, path);
        assert_eq!(children(&xml), [child], "{xml}");
        assert_eq!(
            interfaces(&xml),
            [INTROSPECTABLE, PEER, PROPERTIES],
            "{xml}"
        );
    }
}

#[test]
fn parents_serve_the_standard_interfaces_as_zbus_does_on_a_service_object() {
    let scratch = Scratch::new("introspect-standard");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "alpha");
    let _adoptd = adoptd_on(&scratch, &bus);

    let leaf = interface_members(&introspect(&bus, &service_path("alpha"))).expect("readable");
    for path in ["/", "/org", MANAGER_PATH, SERVICE_PATH_PREFIX] {
        let parent = interface_members(&introspect(&bus, path)).expect("readable");
        for interface in [INTROSPECTABLE, PEER, PROPERTIES] {
            assert_eq!(parent[interface], leaf[interface], "{interface} at {path}");
        }
    }
}

#[test]
fn the_service_node_lists_each_label_and_follows_reloads() {
    let scratch = Scratch::new("introspect-reload");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "alpha");
    idle_service(&scratch, "beta");
    scratch.service(
        "web@",
        "exec = [\"/bin/sleep\", \"1000\"]\nautostart = false\ninstances = [\"one\"]\n",
    );
    let _adoptd = adoptd_on(&scratch, &bus);
    let services = || {
        let xml = introspect(&bus, SERVICE_PATH_PREFIX);
        assert_eq!(
            interfaces(&xml),
            [INTROSPECTABLE, PEER, PROPERTIES],
            "{xml}"
        );
        children(&xml)
    };
    assert_eq!(services(), ["alpha", "beta", "web_40one"]);

    idle_service(&scratch, "gamma");
    reload_until(&bus, Change::Added, "gamma");
    assert_eq!(services(), ["alpha", "beta", "gamma", "web_40one"]);

    std::fs::remove_file(scratch.services().join("alpha.toml")).expect("remove alpha");
    reload_until(&bus, Change::Removed, "alpha");
    assert_eq!(services(), ["beta", "gamma", "web_40one"]);
}

#[test]
fn a_call_reaches_the_service_its_path_names_as_services_come_and_go() {
    let scratch = Scratch::new("introspect-lookup");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    for name in ["alpha", "beta", "gamma"] {
        idle_service(&scratch, name);
    }
    let _adoptd = adoptd_on(&scratch, &bus);
    let name_at = |name: &str| {
        let path = service_path(name);
        bus.busctl_output(
            &["get-property", BUS_NAME, &path, SERVICE_INTERFACE, "Name"],
            None,
        )
    };
    let answers = |name: &str| {
        let output = name_at(name);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("s \"{name}\""),
            "the object of {name}"
        );
    };
    let unknown = |name: &str| {
        let output = name_at(name);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("Unknown object"),
            "{name} still answers: {stderr}"
        );
    };
    for name in ["alpha", "beta", "gamma"] {
        answers(name);
    }
    unknown("delta");
    unknown("aardvark");

    // Added before, between and after the others (by name).
    for name in ["aardvark", "bravo", "delta"] {
        idle_service(&scratch, name);
        reload_until(&bus, Change::Added, name);
    }
    std::fs::remove_file(scratch.services().join("beta.toml")).expect("remove beta");
    reload_until(&bus, Change::Removed, "beta");
    for name in ["aardvark", "alpha", "bravo", "delta", "gamma"] {
        answers(name);
    }
    unknown("beta");
}

#[test]
fn the_service_node_made_again_after_its_last_service_lists_empty_nodes() {
    let scratch = Scratch::new("introspect-again");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "only");
    let _adoptd = adoptd_on(&scratch, &bus);

    std::fs::remove_file(scratch.services().join("only.toml")).expect("remove only");
    reload_until(&bus, Change::Removed, "only");
    let manager = introspect(&bus, MANAGER_PATH);
    assert!(children(&manager).is_empty(), "{manager}");

    idle_service(&scratch, "again");
    reload_until(&bus, Change::Added, "again");
    let manager = introspect(&bus, MANAGER_PATH);
    assert_eq!(children(&manager), ["service"], "{manager}");
    let services = introspect(&bus, SERVICE_PATH_PREFIX);
    assert_eq!(children(&services), ["again"], "{services}");
    assert_eq!(
        interfaces(&services),
        [INTROSPECTABLE, PEER, PROPERTIES],
        "{services}"
    );
    busctl_quietly(&bus, &["tree", BUS_NAME]);
}

#[test]
fn after_a_bus_restart_parents_still_list_children_as_empty_nodes() {
    let scratch = Scratch::new("introspect-restart");
    let Some(mut bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "alpha");
    idle_service(&scratch, "beta");
    let mut adoptd = adoptd_on(&scratch, &bus);

    bus.restart();
    adoptd.wait_for("adoptd to publish again", |l| {
        l.message.starts_with("reconnected to the bus")
    });
    adoptd.wait_for("adoptd to own org.adoptd1 again", |l| {
        l.message.starts_with("published as org.adoptd1")
    });

    let root = introspect(&bus, "/");
    assert_eq!(children(&root), ["org"], "{root}");
    let manager = introspect(&bus, MANAGER_PATH);
    assert_eq!(children(&manager), ["service"], "{manager}");
    assert!(!manager.contains(SERVICE_INTERFACE), "{manager}");
    let services = introspect(&bus, SERVICE_PATH_PREFIX);
    assert_eq!(children(&services), ["alpha", "beta"], "{services}");
    busctl_quietly(&bus, &["tree", BUS_NAME]);
}

#[test]
fn serving_its_objects_and_owning_its_name_logs_no_warning() {
    let scratch = Scratch::new("quiet-start");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    idle_service(&scratch, "alpha");
    let adoptd = adoptd_on(&scratch, &bus);
    assert_eq!(children(&introspect(&bus, SERVICE_PATH_PREFIX)), ["alpha"]);

    let (status, lines) = adoptd.stop();
    assert!(status.success(), "adoptd ended with {status}");
    let warnings: Vec<&str> = lines
        .iter()
        .map(|l| l.text.as_str())
        .filter(|text| text.contains(" WARN ") || text.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// A service that is loaded but never started: an object on the bus and
/// no process.
fn idle_service(scratch: &Scratch, name: &str) {
    scratch.service(
        name,
        "exec = [\"/bin/sleep\", \"1000\"]\nautostart = false\n",
    );
}

/// adoptd on `bus`, once it owns its name.
fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let mut adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    adoptd.wait_for("adoptd to own org.adoptd1", |l| {
        l.message.starts_with("published as org.adoptd1")
    });
    adoptd
}

fn service_path(name: &str) -> String {
    adoptd_dbus::service_path(name).to_string()
}

/// Runs busctl, which must succeed and say nothing on stderr; returns its
/// output.
fn busctl_quietly(bus: &TestBus, args: &[&str]) -> String {
    let output = bus.busctl_output(args, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "busctl {args:?} failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "busctl {args:?} warned:\n{stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The introspection XML of `path`, as served.
fn introspect(bus: &TestBus, path: &str) -> String {
    bus.busctl(&["introspect", "--xml-interface", BUS_NAME, path])
}

/// The names of every interface in `xml`, nested nodes' included, sorted.
fn interfaces(xml: &str) -> Vec<String> {
    interface_members(xml)
        .expect("readable introspection")
        .into_keys()
        .collect()
}

/// The child nodes of `xml`, sorted; each must be empty.
fn children(xml: &str) -> Vec<String> {
    const OPEN: &str = "<node name=\"";
    let mut children = BTreeSet::new();
    for (index, _) in xml.match_indices(OPEN) {
        let rest = &xml[index + OPEN.len()..];
        let (name, after) = rest.split_once('"').expect("a quoted node name");
        assert!(
            after.trim_start().starts_with("/>"),
            "child {name} is not an empty node:\n{xml}"
        );
        children.insert(name.to_owned());
    }
    children.into_iter().collect()
}

enum Change {
    Added,
    Removed,
}

/// Calls Reload, then waits for the Manager's signal that `name` was added
/// or removed (sent once its object is served or gone).
fn reload_until(bus: &TestBus, change: Change, name: &str) {
    block_on(async {
        let connection = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .expect("connect to the test bus");
        let manager = ManagerProxy::new(&connection).await.expect("proxy");
        let mut added = manager.receive_service_added().await.expect("ServiceAdded");
        let mut removed = manager
            .receive_service_removed()
            .await
            .expect("ServiceRemoved");
        manager.reload().await.expect("Reload");
        loop {
            let seen = match change {
                Change::Added => {
                    let signal = added.next().await.expect("a ServiceAdded signal");
                    signal.args().expect("arguments").name.to_owned()
                }
                Change::Removed => {
                    let signal = removed.next().await.expect("a ServiceRemoved signal");
                    signal.args().expect("arguments").name.to_owned()
                }
            };
            if seen == name {
                return;
            }
        }
    });
}
