//! The applet's bus side alone, without a display: the events it makes of
//! a real adoptd on a real dbus-daemon, in the order a window gets them.

// A failed expectation in a test is the test's failure, said with a reason.
#![allow(clippy::expect_used)]

use adoptd_applet::{
    bus::Choice,
    event::{BusEvent, Control, Request, Value},
};
use adoptd_test_support::{bus::TestBus, *};
use tokio::sync::{mpsc, oneshot};

fn adoptd_on(scratch: &Scratch, bus: &TestBus) -> Adoptd {
    let adoptd = Adoptd::start(scratch, &["--address", &bus.address]);
    wait_for_adoptd(&bus.address);
    adoptd
}

/// The bus side on a thread of its own, as the applet runs it.
struct Side {
    runtime: tokio::runtime::Runtime,
    events: mpsc::UnboundedReceiver<BusEvent>,
    requests: mpsc::UnboundedSender<Request>,
    seen: Vec<BusEvent>,
}

impl Side {
    fn start(address: &str) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        let requests = adoptd_applet::bus::spawn(Choice::Address(address.to_owned()), sender)
            .expect("start the bus side");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime for the waits");
        Side {
            runtime,
            events,
            requests,
            seen: Vec::new(),
        }
    }

    /// Waits for the next event that satisfies `matches`.
    fn wait(&mut self, what: &str, matches: impl Fn(&BusEvent) -> bool) -> BusEvent {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let event = self.recv(left);
            match event {
                Some(event) => {
                    self.seen.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                None => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
            }
        }
    }

    fn recv(&mut self, wait: std::time::Duration) -> Option<BusEvent> {
        let Side {
            runtime, events, ..
        } = self;
        runtime.block_on(async {
            tokio::time::timeout(wait, events.recv())
                .await
                .ok()
                .flatten()
        })
    }

    fn control(&self, name: &str, control: Control) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Control {
                path: adoptd_dbus::service_path(name).to_string(),
                control,
                reply,
            })
            .expect("the bus side is running");
        answer.blocking_recv().expect("an answer")
    }
}

fn property<'a>(properties: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    properties
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn path(name: &str) -> String {
    adoptd_dbus::service_path(name).to_string()
}

#[test]
fn the_bus_side_follows_adoptd_from_snapshot_to_signals_and_back() {
    if let Some(reason) = adoptd_test_support::bus::missing_tools() {
        eprintln!("skipped: {reason}");
        return;
    }
    let scratch = Scratch::new("applet-bus");
    let bus = TestBus::start(&scratch);
    let reports = Reports::bind(&scratch);
    dance_service(
        &scratch,
        &reports,
        "dancer",
        "autostart = false",
        &["fork", "setsid", "fork", "serve"],
    );
    let adoptd = adoptd_on(&scratch, &bus);
    let mut side = Side::start(&bus.address);

    let snapshot = side.wait("the snapshot", |e| matches!(e, BusEvent::Snapshot(_)));
    let BusEvent::Snapshot(services) = snapshot else {
        unreachable!()
    };
    let dancer = services
        .iter()
        .find(|s| s.path == path("dancer"))
        .expect("the dancer in the snapshot");
    assert_eq!(
        property(&dancer.properties, "State"),
        Some(&Value::Text("stopped".into()))
    );

    // Starting it goes through the bus side's own control call; the
    // hand-offs come as signals, and the new main PID as a change.
    side.control("dancer", Control::Start)
        .expect("root may start");
    let settled = reports.next();
    side.wait("the last hand-off", |e| {
        matches!(e, BusEvent::Adopted { path: p, pid, .. } if *p == path("dancer") && *pid == settled.pid)
    });
    side.wait("the new main PID", |e| match e {
        BusEvent::Changed {
            path: p,
            properties,
        } => {
            *p == path("dancer")
                && property(properties, "MainPID") == Some(&Value::Unsigned(u64::from(settled.pid)))
        }
        _ => false,
    });
    assert_eq!(
        side.control("dancer", Control::Start),
        Err(side_sentence(&bus, "Start")),
        "a refusal is adoptd's sentence"
    );

    // A reload adds a service, with all its properties.
    scratch.service(
        "newcomer",
        "exec = [\"/bin/sleep\", \"1000\"]\nautostart = false\n",
    );
    bus.busctl(&[
        "call",
        "org.adoptd1",
        "/org/adoptd1",
        "org.adoptd1.Manager",
        "Reload",
    ]);
    let added = side.wait(
        "the added service",
        |e| matches!(e, BusEvent::Added(s) if s.path == path("newcomer")),
    );
    let BusEvent::Added(newcomer) = added else {
        unreachable!()
    };
    assert_eq!(
        property(&newcomer.properties, "Name"),
        Some(&Value::Text("newcomer".into()))
    );

    // adoptd goes and comes back: the side says so, then lists again.
    let _ = adoptd.stop();
    side.wait("adoptd gone", |e| matches!(e, BusEvent::AdoptdGone { .. }));
    assert!(side.control("dancer", Control::Stop).is_err());
    let _adoptd = adoptd_on(&scratch, &bus);
    side.wait(
        "a new snapshot",
        |e| matches!(e, BusEvent::Snapshot(s) if !s.is_empty()),
    );
}

/// What adoptd answers busctl when asked `method` of the running dancer.
fn side_sentence(bus: &TestBus, method: &str) -> String {
    let output = bus.busctl_output(
        &[
            "call",
            "org.adoptd1",
            "/org/adoptd1/service/dancer",
            "org.adoptd1.Service",
            method,
        ],
        None,
    );
    assert!(!output.status.success(), "{method} is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .trim()
        .strip_prefix("Call failed: ")
        .unwrap_or(stderr.trim())
        .to_owned()
}
