//! The OpenMetrics text of a [`View`], encoded by prometheus-client.
//!
//! Made afresh from the view at each scrape: a service that went away
//! leaves no stale series, and a scrape reads memory only, never the bus.
//! No label holds a pid: pids change at every hand-off and would make a
//! new series each time.

use adoptd_dbus::{MainPidSource, State};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::view::View;

/// The content type of [`encode_view`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`classic_text`]'s text.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    name: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceInfoLabels {
    name: String,
    template: String,
    instance: String,
    expect: String,
    load_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    name: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdoptdLabels {
    version: String,
    tracker: String,
    role: String,
}

/// The metrics of `view`, as OpenMetrics text ending with `# EOF`.
pub fn encode_view(view: &View) -> String {
    encode_adoptd(view.adoptd.as_ref())
}

/// The metrics of adoptd as last seen (`None`: not on the bus).
pub fn encode_adoptd(adoptd: Option<&crate::view::Adoptd>) -> String {
    let mut registry = Registry::default();
    let up = Gauge::<i64>::default();
    registry.register(
        "adoptd_up",
        "Whether adoptd is on the bus the exporter watches",
        up.clone(),
    );
    if let Some(adoptd) = adoptd {
        up.set(1);
        let info = Family::<AdoptdLabels, Gauge>::default();
        info.get_or_create(&AdoptdLabels {
            version: adoptd.version.clone(),
            tracker: adoptd.tracker.clone(),
            role: adoptd.role.clone(),
        })
        .set(1);
        registry.register(
            "adoptd_info",
            "adoptd's version, adoption source (tracker) and role (init or subreaper); always 1",
            info,
        );
        let orphans = Counter::<u64>::default();
        orphans.inc_by(adoptd.orphans_reaped);
        registry.register(
            "adoptd_orphans_reaped",
            "Reaped processes that belonged to no service",
            orphans,
        );

        let state = Family::<StateLabels, Gauge>::default();
        let service_info = Family::<ServiceInfoLabels, Gauge>::default();
        let restarts = Family::<NameLabel, Counter>::default();
        let handoffs = Family::<NameLabel, Counter>::default();
        let start_time = Family::<NameLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let source = Family::<SourceLabels, Gauge>::default();
        for service in adoptd.services.values() {
            for known in State::ALL {
                state
                    .get_or_create(&StateLabels {
                        name: service.name.clone(),
                        state: known.as_str().to_owned(),
                    })
                    .set(i64::from(service.state == known.as_str()));
            }
            service_info
                .get_or_create(&ServiceInfoLabels {
                    name: service.name.clone(),
                    template: service.template.clone(),
                    instance: service.instance.clone(),
                    expect: service.expect.clone(),
                    load_state: service.load_state.clone(),
                })
                .set(1);
            let name = NameLabel {
                name: service.name.clone(),
            };
            restarts.get_or_create(&name).inc_by(service.restarts_total);
            handoffs.get_or_create(&name).inc_by(service.handoffs_total);
            if service.start_time_us > 0 {
                start_time
                    .get_or_create(&name)
                    .set(service.start_time_us as f64 / 1e6);
            }
            for known in MainPidSource::ALL {
                source
                    .get_or_create(&SourceLabels {
                        name: service.name.clone(),
                        source: known.as_str().to_owned(),
                    })
                    .set(i64::from(service.main_pid_source == known.as_str()));
            }
        }
        registry.register(
            "adoptd_service_state",
            "1 for the state each service is in, 0 for the others",
            state,
        );
        registry.register(
            "adoptd_service_info",
            "Each service's template, instance, expect and load state; always 1",
            service_info,
        );
        registry.register(
            "adoptd_service_restarts",
            "Restarts of each service seen by the exporter",
            restarts,
        );
        registry.register(
            "adoptd_service_handoffs",
            "Hand-offs of each service's main process seen by the exporter",
            handoffs,
        );
        registry.register(
            "adoptd_service_start_time_seconds",
            "When each service last became starting or running, in seconds since the epoch",
            start_time,
        );
        registry.register(
            "adoptd_service_main_pid_source",
            "1 for how each service's main PID was learnt (spawn, adoption, pid-file, notify, guess)",
            source,
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// OpenMetrics text as Prometheus's older text format (0.0.4), for the
/// clients that do not ask for OpenMetrics (curl, `promtool check
/// metrics`): a counter family is named with its `_total` in `# HELP` and
/// `# TYPE`, and there is no `# EOF` or `# UNIT`. The samples are the same.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.split_inclusive('\n') {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|prefix| line.starts_with(prefix));
        if let Some(prefix) = comment {
            let rest = &line[prefix.len()..];
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) {
                text.push_str(prefix);
                text.push_str(name);
                text.push_str("_total");
                text.push_str(&rest[name.len()..]);
                continue;
            }
        }
        text.push_str(line);
    }
    text
}

#[cfg(test)]
mod tests {
    use zbus::Variant;

    use super::*;
    use crate::view::{Adoptd, Service};

    #[test]
    fn a_service_is_one_hot_in_its_state_and_source() {
        let mut adoptd = Adoptd {
            version: "0.1.0".into(),
            tracker: "procfs".into(),
            role: "subreaper".into(),
            ..Adoptd::default()
        };
        let values = [
            ("Name", Variant::from("echo@one")),
            ("Template", Variant::from("echo")),
            ("Instance", Variant::from("one")),
            ("Expect", Variant::from("auto")),
            ("LoadState", Variant::from("loaded")),
            ("State", Variant::from("running")),
            ("MainPIDSource", Variant::from("adoption")),
            ("Handoffs", Variant::U32(2)),
            ("StateChangeTimestamp", Variant::U64(1_500_000)),
        ];
        adoptd.services.insert(
            "/x".into(),
            Service::read(values.iter().map(|(n, v)| (*n, v))),
        );
        let text = encode_adoptd(Some(&adoptd));
        assert!(text.contains("adoptd_up 1\n"), "{text}");
        assert!(
            text.contains("adoptd_service_state{name=\"echo@one\",state=\"running\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("adoptd_service_state{name=\"echo@one\",state=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "adoptd_service_main_pid_source{name=\"echo@one\",source=\"adoption\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("adoptd_service_handoffs_total{name=\"echo@one\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("adoptd_service_start_time_seconds{name=\"echo@one\"} 1.5\n"),
            "{text}"
        );
        assert!(text.contains("load_state=\"loaded\""), "{text}");
        assert!(
            text.contains(
                "adoptd_info{version=\"0.1.0\",tracker=\"procfs\",role=\"subreaper\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_classic_format_names_counter_families_with_total() {
        let openmetrics = "# HELP a_restarts Restarts.\n# TYPE a_restarts counter\na_restarts_total{name=\"x\"} 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP a_restarts_total Restarts.\n# TYPE a_restarts_total counter\na_restarts_total{name=\"x\"} 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n"
        );
    }

    #[test]
    fn without_adoptd_only_up_is_0() {
        let text = encode_view(&View::default());
        assert!(text.contains("adoptd_up 0\n"), "{text}");
        assert!(!text.contains("adoptd_service"), "{text}");
    }
}
