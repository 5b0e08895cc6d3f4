//! The model fed the events the bus layer makes of adoptd's signals.

use gtk::{gio, prelude::*};

use super::*;
use crate::event::Value::{Signed, Text, Unsigned};

fn running(name: &str, main_pid: u64) -> ServiceSnapshot {
    snapshot_of(
        name,
        &[
            ("State", Text("running".into())),
            ("MainPID", Unsigned(main_pid)),
            ("PreviousPID", Unsigned(0)),
            ("Handoffs", Unsigned(0)),
            ("Restarts", Unsigned(0)),
            ("StateChangeTimestamp", Unsigned(1_700_000_000_000_000)),
        ],
    )
}

fn names(list: &gio::ListStore) -> Vec<String> {
    list.iter::<ServiceObject>()
        .flatten()
        .map(|service| service.fields().name.clone())
        .collect()
}

fn live(model: &Model, snapshots: Vec<ServiceSnapshot>) {
    model.apply(BusEvent::Connected {
        bus: "test bus".into(),
    });
    model.apply(BusEvent::Snapshot(snapshots));
}

fn path(name: &str) -> String {
    adoptd_dbus::service_path(name).to_string()
}

fn changed(name: &str, properties: &[(&str, Value)]) -> BusEvent {
    BusEvent::Changed {
        path: path(name),
        properties: properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
    }
}

#[test]
fn a_snapshot_fills_the_rows() {
    let model = Model::new();
    live(&model, vec![running("nginx", 10), running("redis", 20)]);
    assert_eq!(names(model.root()), ["nginx", "redis"]);
    let nginx = model.service_named("nginx").unwrap();
    assert_eq!(nginx.fields().main_pid, 10);
    assert_eq!(nginx.fields().state, "running");
    assert_eq!(
        model.availability(),
        Availability::Live {
            bus: "test bus".into()
        }
    );
}

#[test]
fn instances_are_grouped_under_their_template() {
    let model = Model::new();
    live(
        &model,
        vec![
            running("apache2@chroot1", 11),
            running("nginx", 10),
            running("apache2@chroot2", 12),
        ],
    );
    assert_eq!(names(model.root()), ["nginx", "apache2"]);
    let group = model
        .root()
        .item(1)
        .and_downcast::<ServiceObject>()
        .unwrap();
    assert!(group.is_group());
    assert_eq!(
        names(group.children().unwrap()),
        ["apache2@chroot1", "apache2@chroot2"]
    );
    assert_eq!(group.summary(), "2 running");
}

#[test]
fn properties_changed_updates_one_row_in_place() {
    let model = Model::new();
    live(&model, vec![running("nginx", 10), running("redis", 20)]);
    let changes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = changes.clone();
    model
        .root()
        .connect_items_changed(move |_, position, removed, added| {
            seen.borrow_mut().push((position, removed, added));
        });
    model.apply(changed(
        "redis",
        &[
            ("MainPID", Unsigned(21)),
            ("PreviousPID", Unsigned(20)),
            ("Handoffs", Unsigned(1)),
        ],
    ));
    assert!(changes.borrow().is_empty(), "told at the flush");
    model.flush();
    let redis = model.service_named("redis").unwrap();
    assert_eq!(
        (
            redis.fields().main_pid,
            redis.fields().previous_pid,
            redis.fields().handoffs
        ),
        (21, 20, 1)
    );
    // One item changed; nothing was re-listed.
    assert_eq!(*changes.borrow(), [(1, 1, 1)]);
}

#[test]
fn a_hand_off_and_an_exit_go_on_the_timeline() {
    let model = Model::new();
    live(&model, vec![running("dancer", 10)]);
    model.apply(BusEvent::Adopted {
        path: path("dancer"),
        pid: 12,
        previous_pid: 10,
        at: 5,
    });
    model.apply(BusEvent::Exited {
        path: path("dancer"),
        pid: 12,
        code: 1,
        signal: -1,
        at: 6,
    });
    let dancer = model.service_named("dancer").unwrap();
    let entries: Vec<What> = dancer
        .timeline()
        .entries()
        .map(|e| e.what.clone())
        .collect();
    assert_eq!(
        entries,
        [
            What::Handoff {
                pid: 12,
                previous_pid: 10
            },
            What::Exit {
                pid: 12,
                code: 1,
                signal: -1
            }
        ]
    );
}

#[test]
fn a_failed_instance_makes_its_group_failed() {
    let model = Model::new();
    live(
        &model,
        vec![running("web@a", 1), running("web@b", 2), running("db", 3)],
    );
    let group_changes = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = group_changes.clone();
    model.connect_order_changed(move || count.set(count.get() + 1));
    model.apply(changed("web@b", &[("State", Text("failed".into()))]));
    let group = model
        .root()
        .item(1)
        .and_downcast::<ServiceObject>()
        .unwrap();
    assert_eq!(group.fields().state, "failed");
    assert!(group.is_failed());
    assert_eq!(group.summary(), "1 failed, 1 running");
    assert_eq!(group_changes.get(), 1);
    assert_eq!(model.tally().failed, ["web@b"]);
}

#[test]
fn added_and_removed_services_come_and_go() {
    let model = Model::new();
    live(&model, vec![running("nginx", 10)]);
    model.apply(BusEvent::Added(running("web@a", 11)));
    model.apply(BusEvent::Added(running("fresh", 12)));
    assert_eq!(names(model.root()), ["nginx", "web", "fresh"]);
    model.apply(BusEvent::Removed {
        path: path("web@a"),
    });
    assert_eq!(names(model.root()), ["nginx", "fresh"]);
    assert!(model.service_named("web@a").is_none());
    model.apply(BusEvent::Removed {
        path: path("nobody-knows"),
    });
    assert_eq!(model.len(), 2);
}

#[test]
fn adoptd_going_away_empties_the_list_and_coming_back_refills_it() {
    let model = Model::new();
    live(&model, vec![running("dancer", 10)]);
    model.apply(BusEvent::Adopted {
        path: path("dancer"),
        pid: 12,
        previous_pid: 10,
        at: 5,
    });
    model.apply(BusEvent::AdoptdGone {
        reason: "adoptd is not running".into(),
    });
    assert_eq!(model.root().n_items(), 0);
    assert!(matches!(model.availability(), Availability::Gone { .. }));
    model.apply(BusEvent::Snapshot(vec![running("dancer", 12)]));
    let dancer = model.service_named("dancer").unwrap();
    assert_eq!(dancer.fields().main_pid, 12);
    // The timeline seen before adoptd went away is still there.
    assert_eq!(dancer.timeline().len(), 1);
}

#[test]
fn a_new_snapshot_keeps_known_rows_and_drops_missing_ones() {
    let model = Model::new();
    live(&model, vec![running("a", 1), running("b", 2)]);
    let a = model.service_named("a").unwrap();
    model.apply(BusEvent::Snapshot(vec![running("a", 5), running("c", 3)]));
    assert_eq!(names(model.root()), ["a", "c"]);
    let again = model.service_named("a").unwrap();
    assert_eq!(again, a);
    assert_eq!(again.fields().main_pid, 5);
}

#[test]
fn unknown_properties_and_values_out_of_range_never_break_a_row() {
    let model = Model::new();
    live(&model, vec![running("odd", 10)]);
    model.apply(changed(
        "odd",
        &[
            ("State", Text("hibernating".into())),
            ("MainPID", Unsigned(u64::MAX)),
            ("Restarts", Signed(-4)),
            ("Handoffs", Text("many".into())),
            ("BrandNewProperty", Value::Other("(ii) 1 2".into())),
        ],
    ));
    let odd = model.service_named("odd").unwrap();
    let fields = odd.fields().clone();
    assert_eq!(fields.state, "hibernating");
    assert_eq!(
        (fields.main_pid, fields.restarts, fields.handoffs),
        (0, 0, 0)
    );
    assert!(!odd.is_failed());
    assert!(odd.properties().contains_key("BrandNewProperty"));
    assert_eq!(look::words(&fields.state), "unknown (hibernating)");
}

#[test]
fn signals_for_unknown_services_are_ignored() {
    let model = Model::new();
    live(&model, vec![]);
    model.apply(changed("ghost", &[("State", Text("failed".into()))]));
    model.apply(BusEvent::Adopted {
        path: path("ghost"),
        pid: 2,
        previous_pid: 1,
        at: 1,
    });
    assert!(model.is_empty());
}

#[test]
fn a_service_with_no_name_property_is_named_from_its_path() {
    let model = Model::new();
    live(
        &model,
        vec![ServiceSnapshot {
            path: path("apache2@chroot1"),
            properties: vec![("State".into(), Text("stopped".into()))],
        }],
    );
    let service = model.service(&path("apache2@chroot1")).unwrap();
    assert_eq!(service.fields().name, "apache2@chroot1");
    assert_eq!(service.fields().template, "apache2");
}

#[test]
fn the_tally_counts_states_most_urgent_first() {
    let model = Model::new();
    live(
        &model,
        vec![running("a", 1), running("b", 2), running("c", 3)],
    );
    model.apply(changed("c", &[("State", Text("failed".into()))]));
    let tally = model.tally();
    assert_eq!(tally.total, 3);
    assert_eq!(
        tally.by_state,
        [("failed".to_owned(), 1), ("running".to_owned(), 2)]
    );
}

#[test]
fn a_thousand_services_are_one_splice() {
    let model = Model::new();
    let splices = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = splices.clone();
    model
        .root()
        .connect_items_changed(move |_, _, _, _| count.set(count.get() + 1));
    let snapshots = (0..1000)
        .map(|n| running(&format!("service{n}"), 1000 + n))
        .collect();
    live(&model, snapshots);
    assert_eq!(model.root().n_items(), 1000);
    assert_eq!(splices.get(), 1);
}

#[test]
fn many_rows_changed_at_once_are_one_re_sort() {
    let model = Model::new();
    live(
        &model,
        (0..100)
            .map(|n| running(&format!("s{n}"), 10 + n))
            .collect(),
    );
    let items = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = items.clone();
    model
        .root()
        .connect_items_changed(move |_, _, _, _| seen.set(seen.get() + 1));
    let resorts = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = resorts.clone();
    model.connect_order_changed(move || count.set(count.get() + 1));
    for n in 0..100 {
        model.apply(changed(
            &format!("s{n}"),
            &[("State", Text("stopping".into()))],
        ));
    }
    model.flush();
    assert_eq!((items.get(), resorts.get()), (0, 1));
    // Each row already shows its new state: properties notify at once.
    let row = model.service_named("s7").unwrap();
    assert_eq!(row.state(), "stopping");
}

#[test]
fn a_property_change_notifies_at_once() {
    let model = Model::new();
    live(&model, vec![running("nginx", 10)]);
    let nginx = model.service_named("nginx").unwrap();
    let notified = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = notified.clone();
    nginx.connect_notify_local(Some("main-pid"), move |_, _| count.set(count.get() + 1));
    model.apply(changed("nginx", &[("MainPID", Unsigned(11))]));
    assert_eq!(notified.get(), 1);
    assert_eq!(nginx.main_pid(), 11);
}

#[test]
fn looking_again_on_the_same_bus_keeps_saying_adoptd_is_not_running() {
    let model = Model::new();
    model.apply(BusEvent::Connected {
        bus: "system bus".into(),
    });
    model.apply(BusEvent::AdoptdGone {
        reason: "adoptd is not running on the system bus".into(),
    });
    let changes = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = changes.clone();
    model.connect_availability(move |_| count.set(count.get() + 1));
    for _ in 0..3 {
        model.apply(BusEvent::Connected {
            bus: "system bus".into(),
        });
        model.apply(BusEvent::AdoptdGone {
            reason: "adoptd is not running on the system bus".into(),
        });
    }
    assert_eq!(changes.get(), 0, "no flicker between pages");
    model.apply(BusEvent::Connected {
        bus: "bus at unix:path=/x".into(),
    });
    assert_eq!(
        model.availability(),
        Availability::Listing {
            bus: "bus at unix:path=/x".into()
        }
    );
}
