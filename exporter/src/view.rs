//! What the exporter knows of adoptd: the last value of every property it
//! exports, kept current by the bus follower and read by each scrape.
//!
//! Pure data and the rules for applying what adoptd says to it; no I/O.
//! Counters are the exporter's own: adoptd's `Handoffs` starts again at 0
//! at every start, so the exporter adds up every increase it sees, which
//! keeps `adoptd_service_handoffs_total` monotonic for `rate()` (a new
//! adoptd, or a new exporter, starts the counters again, as any counter
//! reset).

use std::collections::BTreeMap;

use zbus::Variant;

/// adoptd as last seen; `None` while it is not on the bus.
#[derive(Debug, Default)]
pub struct View {
    pub adoptd: Option<Adoptd>,
    /// Counts the changes made to the view, so that a scrape can reuse
    /// the text of the last one when nothing changed since.
    pub generation: u64,
}

impl View {
    /// Changes the view, and counts the change.
    pub fn change<T>(&mut self, change: impl FnOnce(&mut Option<Adoptd>) -> T) -> T {
        self.generation = self.generation.wrapping_add(1);
        change(&mut self.adoptd)
    }
}

/// The manager's properties and the services, by object path.
#[derive(Debug, Default, Clone)]
pub struct Adoptd {
    pub version: String,
    pub tracker: String,
    pub role: String,
    pub orphans_reaped: u64,
    pub services: BTreeMap<String, Service>,
}

/// One service's exported properties.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub template: String,
    pub instance: String,
    pub expect: String,
    /// `LoadState`: loaded, bad-setting or not-found.
    pub load_state: String,
    pub state: String,
    pub main_pid_source: String,
    /// `Restarts` and `Handoffs` as adoptd said them last.
    restarts: u32,
    handoffs: u32,
    /// The increases of those seen since the service was first read.
    pub restarts_total: u64,
    pub handoffs_total: u64,
    /// When the service last became `starting` or `running` from any
    /// other state, in µs since the epoch; 0 when not known.
    pub start_time_us: u64,
    state_change_timestamp: u64,
}

impl Adoptd {
    /// Applies the manager's properties (`GetAll`, `PropertiesChanged`).
    pub fn set_manager<'a>(
        &mut self,
        properties: impl IntoIterator<Item = (&'a str, &'a Variant<'a>)>,
    ) {
        for (name, value) in properties {
            match name {
                "Version" => set_string(&mut self.version, value),
                "Tracker" => set_string(&mut self.tracker, value),
                "Role" => set_string(&mut self.role, value),
                "OrphansReaped" => {
                    if let Variant::U64(count) = value {
                        self.orphans_reaped = *count;
                    }
                }
                _ => {}
            }
        }
    }
}

impl Service {
    /// A service first read with `properties` (`GetAll`, or its entry in
    /// `GetManagedObjects`).
    pub fn read<'a>(properties: impl IntoIterator<Item = (&'a str, &'a Variant<'a>)>) -> Self {
        let mut service = Service::default();
        service.apply(properties);
        service.restarts_total = u64::from(service.restarts);
        service.handoffs_total = u64::from(service.handoffs);
        service
    }

    /// Applies changed properties (`PropertiesChanged`).
    pub fn apply<'a>(&mut self, properties: impl IntoIterator<Item = (&'a str, &'a Variant<'a>)>) {
        let was = self.state.clone();
        for (name, value) in properties {
            match name {
                "Name" => set_string(&mut self.name, value),
                "Template" => set_string(&mut self.template, value),
                "Instance" => set_string(&mut self.instance, value),
                "Expect" => set_string(&mut self.expect, value),
                "LoadState" => set_string(&mut self.load_state, value),
                "State" => set_string(&mut self.state, value),
                "MainPIDSource" => set_string(&mut self.main_pid_source, value),
                "Restarts" => {
                    if let Variant::U32(count) = value {
                        self.restarts_total += increase(self.restarts, *count);
                        self.restarts = *count;
                    }
                }
                "Handoffs" => {
                    if let Variant::U32(count) = value {
                        self.handoffs_total += increase(self.handoffs, *count);
                        self.handoffs = *count;
                    }
                }
                "StateChangeTimestamp" => {
                    if let Variant::U64(us) = value {
                        self.state_change_timestamp = *us;
                    }
                }
                _ => {}
            }
        }
        let started = |state: &str| matches!(state, "starting" | "running");
        if started(&self.state) && (!started(&was) || self.start_time_us == 0) {
            self.start_time_us = self.state_change_timestamp;
        }
    }
}

/// How much a count that may start again at 0 grew from `last` to `now`.
fn increase(last: u32, now: u32) -> u64 {
    if now >= last {
        u64::from(now - last)
    } else {
        u64::from(now)
    }
}

fn set_string(field: &mut String, value: &Variant<'_>) {
    if let Variant::Str(text) = value {
        *field = text.as_str().to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props<'a>(
        values: &'a [(&'a str, Variant<'a>)],
    ) -> impl Iterator<Item = (&'a str, &'a Variant<'a>)> {
        values.iter().map(|(name, value)| (*name, value))
    }

    #[test]
    fn handoffs_total_keeps_growing_across_restarts() {
        let mut service = Service::read(props(&[
            ("Name", Variant::from("web")),
            ("State", Variant::from("running")),
            ("Handoffs", Variant::U32(2)),
            ("StateChangeTimestamp", Variant::U64(1_000_000)),
        ]));
        assert_eq!(service.handoffs_total, 2);
        assert_eq!(service.start_time_us, 1_000_000);
        service.apply(props(&[
            ("State", Variant::from("failed")),
            ("StateChangeTimestamp", Variant::U64(2_000_000)),
        ]));
        service.apply(props(&[
            ("State", Variant::from("starting")),
            ("Handoffs", Variant::U32(0)),
            ("StateChangeTimestamp", Variant::U64(3_000_000)),
        ]));
        service.apply(props(&[
            ("Handoffs", Variant::U32(1)),
            ("State", Variant::from("running")),
        ]));
        assert_eq!(service.handoffs_total, 3);
        assert_eq!(service.start_time_us, 3_000_000);
    }
}
