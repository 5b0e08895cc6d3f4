//! `org.freedesktop.DBus.ObjectManager` at `/org/adoptd1` against a real
//! dbus-daemon: `GetManagedObjects` lists every service object with the
//! properties `GetAll` gives for it, and `InterfacesAdded` and
//! `InterfacesRemoved` tell of service objects as they come and go.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use std::collections::HashMap;

use adoptd_dbus::{BUS_NAME, MANAGER_PATH, ManagerProxy, SERVICE_INTERFACE, State};
use adoptd_test_support::{
    bus::{TestBus, block_on},
    *,
};
use futures_util::StreamExt as _;
use zbus::{
    OwnedVariant,
    fdo::{ObjectManagerProxy, PropertiesProxy},
    names::InterfaceName,
};

#[test]
fn every_service_object_is_managed_with_the_properties_get_all_gives() {
    let scratch = Scratch::new("managed-objects");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    let sleeper = argv(&["/bin/sleep", "1000"]);
    scratch.service(
        "sleeper",
        &format!("exec = {sleeper}\nexpect = \"foreground\"\ndescription = \"a sleeper\"\n"),
    );
    scratch.service(
        "web@",
        &format!("exec = {sleeper}\nexpect = \"foreground\"\ninstances = [\"one\"]\n"),
    );
    scratch.service(
        "idle",
        "exec = [\"/bin/true\"]\nautostart = false\nenvironment = { LANG = \"C\" }\n",
    );
    scratch.service("refused", "exec = \"not a list\"\n");
    let (_adoptd, mut watch) = bus.adoptd(&scratch);
    for name in ["sleeper", "web@one"] {
        watch.wait_status(name, "running", |status| status.state == State::Running);
    }

    let (managed, each) = block_on(async {
        let connection = connect(&bus).await;
        let managed = object_manager(&connection)
            .await
            .get_managed_objects()
            .await
            .expect("GetManagedObjects");
        let mut each = HashMap::new();
        for path in managed.keys() {
            let properties = PropertiesProxy::builder(&connection)
                .destination(BUS_NAME)
                .path(path.clone())
                .build()
                .await
                .expect("a Properties proxy")
                .get_all(InterfaceName::from_static_str_unchecked(SERVICE_INTERFACE))
                .await
                .expect("GetAll");
            each.insert(path.to_string(), properties);
        }
        (managed, each)
    });

    let mut paths: Vec<String> = managed.keys().map(|path| path.to_string()).collect();
    paths.sort();
    let mut expected: Vec<String> = ["sleeper", "web@one", "idle", "refused"]
        .into_iter()
        .map(|name| adoptd_dbus::service_path(name).to_string())
        .collect();
    expected.sort();
    assert_eq!(paths, expected, "only the service objects are managed");
    for (path, interfaces) in &managed {
        let names: Vec<&str> = interfaces.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, [SERVICE_INTERFACE], "{path}");
        let listed = &interfaces[SERVICE_INTERFACE];
        let alone = &each[path.as_str()];
        let mut names: Vec<&String> = listed.keys().collect();
        names.sort();
        let mut alone_names: Vec<&String> = alone.keys().collect();
        alone_names.sort();
        assert_eq!(names, alone_names, "{path}");
        for (name, value) in listed {
            assert_eq!(Some(value), alone.get(name), "{path}: {name}");
        }
    }
    let sleeper = &managed[&adoptd_dbus::service_path("sleeper")][SERVICE_INTERFACE];
    assert_eq!(text(&sleeper["Description"]), "a sleeper");
    assert_eq!(text(&sleeper["State"]), "running");
    let main_pid = u32::try_from(&sleeper["MainPID"]).expect("MainPID is u");
    let pids = Vec::<u32>::try_from(sleeper["PIDs"].try_clone().expect("a copy")).expect("au");
    assert_eq!(pids, [main_pid]);
    let refused = &managed[&adoptd_dbus::service_path("refused")][SERVICE_INTERFACE];
    assert_eq!(text(&refused["LoadState"]), "bad-setting");
    assert!(!text(&refused["LoadError"]).is_empty());
}

#[test]
fn a_service_object_that_comes_and_goes_is_announced_with_its_properties() {
    let scratch = Scratch::new("interfaces-added");
    let Some(bus) = TestBus::or_skip(&scratch) else {
        return;
    };
    scratch.service("first", "exec = [\"/bin/true\"]\nautostart = false\n");
    let (_adoptd, _watch) = bus.adoptd(&scratch);
    let late = adoptd_dbus::service_path("late");

    let (added, removed) = block_on(async {
        let connection = connect(&bus).await;
        let objects = object_manager(&connection).await;
        let mut added = objects
            .receive_interfaces_added()
            .await
            .expect("InterfacesAdded");
        let mut removed = objects
            .receive_interfaces_removed()
            .await
            .expect("InterfacesRemoved");
        let manager = ManagerProxy::new(&connection).await.expect("proxy");

        scratch.service(
            "late",
            "exec = [\"/bin/true\"]\nautostart = false\ndescription = \"came late\"\n",
        );
        manager.reload().await.expect("Reload");
        let signal = added.next().await.expect("an InterfacesAdded signal");
        let args = signal.args().expect("arguments");
        let path = args.object_path().to_string();
        let interfaces: HashMap<String, HashMap<String, OwnedVariant>> = args
            .interfaces_and_properties()
            .iter()
            .map(|(interface, properties)| {
                let properties = properties
                    .iter()
                    .map(|(name, value)| {
                        let value = value.try_to_owned().expect("an owned copy");
                        ((*name).to_owned(), value)
                    })
                    .collect();
                (interface.to_string(), properties)
            })
            .collect();

        std::fs::remove_file(scratch.services().join("late.toml")).expect("remove late.toml");
        manager.reload().await.expect("Reload");
        let signal = removed.next().await.expect("an InterfacesRemoved signal");
        let args = signal.args().expect("arguments");
        let gone = (
            args.object_path().to_string(),
            args.interfaces()
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        );
        ((path, interfaces), gone)
    });

    let (path, interfaces) = added;
    assert_eq!(
        path,
        late.to_string(),
        "the first object announced is late's"
    );
    let names: Vec<&String> = interfaces.keys().collect();
    assert_eq!(names, [SERVICE_INTERFACE]);
    let properties = &interfaces[SERVICE_INTERFACE];
    assert_eq!(text(&properties["Name"]), "late");
    assert_eq!(text(&properties["Description"]), "came late");
    assert_eq!(text(&properties["State"]), "stopped");
    assert_eq!(text(&properties["LoadState"]), "loaded");
    assert!(properties.contains_key("PIDs"), "{properties:?}");
    assert_eq!(
        removed,
        (late.to_string(), vec![SERVICE_INTERFACE.to_owned()])
    );
}

async fn object_manager(connection: &zbus::Connection) -> ObjectManagerProxy<'_> {
    ObjectManagerProxy::builder(connection)
        .destination(BUS_NAME)
        .path(MANAGER_PATH)
        .build()
        .await
        .expect("an ObjectManager proxy")
}

fn text(value: &OwnedVariant) -> String {
    String::try_from(value.try_clone().expect("a copy")).expect("a string")
}

async fn connect(bus: &TestBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the test bus")
}
