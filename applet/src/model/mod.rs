//! The applet's model: every service adoptd publishes, as
//! [`ServiceObject`]s in a `gio::ListStore` that the window only views.
//!
//! - [`service`]: the object of one row;
//! - [`look`]: how a state looks (word, symbol, colour class);
//! - [`since`]: relative times;
//! - [`timeline`]: the hand-offs and exits seen since the applet started.
//!
//! The bus feeds [`Model::apply`] one [`BusEvent`] at a time, in bus
//! order; nothing else changes the model. Plain services and template
//! groups sit in [`Model::root`]; an instance sits in its group's children,
//! and a group exists while it has an instance. A change never re-lists:
//! it updates one object, whose properties notify the rows bound to them
//! at once. Whether its place in a sorted view moved is told at
//! [`Model::flush`], after a batch of events: each changed row as one
//! changed item, or, for many, one request to re-sort (a thousand services
//! starting at once are then one sort, not a thousand).
//! The model needs GLib but no display, so its tests run anywhere.

pub mod look;
pub mod service;
pub mod since;
pub mod timeline;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use gtk::{gio, prelude::*};
pub use service::{Fields, ServiceObject};
use timeline::{Entry, Timeline, What};

use crate::event::{BusEvent, ServiceSnapshot, Value};

/// Whether adoptd can be seen, as the window says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Looking for a bus.
    Connecting,
    /// On `bus`, listing adoptd's services.
    Listing { bus: String },
    /// adoptd is there and the model is current.
    Live { bus: String },
    /// adoptd is not running (or no bus could be reached): `reason` says
    /// which.
    Gone { reason: String },
}

/// How many services are in which state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    /// By the words of [`look::words`], most urgent first.
    pub by_state: Vec<(String, usize)>,
    /// Names of the failed services, sorted.
    pub failed: Vec<String>,
}

type Listener<T> = RefCell<Vec<Box<dyn Fn(&T)>>>;

/// The services, their rows and their timelines.
pub struct Model {
    root: gio::ListStore,
    services: RefCell<HashMap<String, ServiceObject>>,
    groups: RefCell<HashMap<String, ServiceObject>>,
    /// Timelines of services that went with adoptd, given back if they
    /// come back with it.
    retired: RefCell<HashMap<String, Timeline>>,
    bus: RefCell<String>,
    availability: RefCell<Availability>,
    availability_listeners: Listener<Availability>,
    /// Called after each event that changed a state or the set of
    /// services.
    tally_listeners: Listener<Model>,
    /// Called when rows may have moved in a way lists do not see (a
    /// group's state, or many rows at once): sorted views re-sort then.
    order_listeners: RefCell<Vec<Box<dyn Fn()>>>,
    /// Rows changed since the last [`Model::flush`], by path.
    moved: RefCell<(Vec<ServiceObject>, std::collections::HashSet<String>)>,
}

/// Past this many changed rows in one batch, one re-sort is cheaper than
/// telling each.
const MANY_MOVED: usize = 16;

impl Model {
    pub fn new() -> Rc<Self> {
        Rc::new(Model {
            root: gio::ListStore::new::<ServiceObject>(),
            services: RefCell::default(),
            groups: RefCell::default(),
            retired: RefCell::default(),
            bus: RefCell::default(),
            availability: RefCell::new(Availability::Connecting),
            availability_listeners: RefCell::default(),
            tally_listeners: RefCell::default(),
            order_listeners: RefCell::default(),
            moved: RefCell::default(),
        })
    }

    /// Plain services and template groups.
    pub fn root(&self) -> &gio::ListStore {
        &self.root
    }

    pub fn availability(&self) -> Availability {
        self.availability.borrow().clone()
    }

    /// The service at `path`, if adoptd has it.
    pub fn service(&self, path: &str) -> Option<ServiceObject> {
        self.services.borrow().get(path).cloned()
    }

    /// The service called `name`, if adoptd has it.
    pub fn service_named(&self, name: &str) -> Option<ServiceObject> {
        self.services
            .borrow()
            .values()
            .find(|service| service.fields().name == name)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.services.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.borrow().is_empty()
    }

    pub fn tally(&self) -> Tally {
        let services = self.services.borrow();
        let mut by_state: BTreeMap<(u8, String), usize> = BTreeMap::new();
        let mut failed = Vec::new();
        for service in services.values() {
            let fields = service.fields();
            let look = look::look(&fields.state);
            *by_state
                .entry((look.urgency, look::words(&fields.state)))
                .or_default() += 1;
            if service.is_failed() {
                failed.push(fields.name.clone());
            }
        }
        failed.sort_unstable();
        Tally {
            total: services.len(),
            by_state: by_state
                .into_iter()
                .map(|((_, state), count)| (state, count))
                .collect(),
            failed,
        }
    }

    pub fn connect_availability(&self, listener: impl Fn(&Availability) + 'static) {
        self.availability_listeners
            .borrow_mut()
            .push(Box::new(listener));
    }

    pub fn connect_tally(&self, listener: impl Fn(&Model) + 'static) {
        self.tally_listeners.borrow_mut().push(Box::new(listener));
    }

    pub fn connect_order_changed(&self, listener: impl Fn() + 'static) {
        self.order_listeners.borrow_mut().push(Box::new(listener));
    }

    /// Tells sorted views where rows changed since the last flush: each as
    /// one changed item of its list, or, past [`MANY_MOVED`], one re-sort.
    /// The bus loop calls it once it has applied what was waiting.
    pub fn flush(&self) {
        let (moved, _) = std::mem::take(&mut *self.moved.borrow_mut());
        if moved.len() > MANY_MOVED {
            self.order_changed();
            return;
        }
        for service in moved {
            let template = service.fields().template.clone();
            let list = if template.is_empty() {
                Some(self.root.clone())
            } else {
                self.groups
                    .borrow()
                    .get(&template)
                    .and_then(|group| group.children().cloned())
            };
            if let Some(list) = list
                && let Some(position) = list.find(&service)
            {
                list.items_changed(position, 1, 1);
            }
        }
    }

    /// Applies one event from the bus.
    pub fn apply(&self, event: BusEvent) {
        match event {
            BusEvent::Connected { bus } => {
                // Looking again on the same bus while adoptd is away: the
                // window keeps saying it is not running.
                let same = *self.bus.borrow() == bus;
                if same && matches!(self.availability(), Availability::Gone { .. }) {
                    return;
                }
                *self.bus.borrow_mut() = bus.clone();
                self.set_availability(Availability::Listing { bus });
            }
            BusEvent::AdoptdGone { reason } => {
                self.clear();
                self.set_availability(Availability::Gone { reason });
                self.tally_changed();
            }
            BusEvent::Snapshot(snapshots) => {
                self.replace(snapshots);
                let bus = self.bus.borrow().clone();
                self.set_availability(Availability::Live { bus });
                self.tally_changed();
            }
            BusEvent::Added(snapshot) => {
                self.add(vec![snapshot]);
                self.tally_changed();
            }
            BusEvent::Removed { path } => {
                if let Some(service) = self.services.borrow_mut().remove(&path) {
                    self.detach(&service);
                }
                self.tally_changed();
            }
            BusEvent::Changed { path, properties } => {
                let Some(service) = self.service(&path) else {
                    return;
                };
                let state_before = service.fields().state.clone();
                let shown = service.update(properties);
                if shown {
                    self.row_changed(&service);
                }
                service.emit_changed();
                if service.fields().state != state_before {
                    self.group_of_changed(&service);
                    self.tally_changed();
                }
            }
            BusEvent::Adopted {
                path,
                pid,
                previous_pid,
                at,
            } => self.record(&path, at, What::Handoff { pid, previous_pid }),
            BusEvent::Exited {
                path,
                pid,
                code,
                signal,
                at,
            } => self.record(&path, at, What::Exit { pid, code, signal }),
        }
    }

    fn record(&self, path: &str, at: u64, what: What) {
        if let Some(service) = self.service(path) {
            service.timeline_mut().push(Entry { at, what });
            service.emit_changed();
        }
    }

    /// Makes the model hold exactly `snapshots`: known services are
    /// updated in place (their rows and timelines stay), new ones added,
    /// the others removed.
    fn replace(&self, snapshots: Vec<ServiceSnapshot>) {
        let wanted: std::collections::HashSet<String> =
            snapshots.iter().map(|s| s.path.clone()).collect();
        let gone: Vec<ServiceObject> = self
            .services
            .borrow()
            .iter()
            .filter(|(path, _)| !wanted.contains(*path))
            .map(|(_, service)| service.clone())
            .collect();
        for service in gone {
            self.services.borrow_mut().remove(&service.path());
            self.detach(&service);
        }
        self.add(snapshots);
    }

    /// Adds or updates services. New rows go into their lists in one
    /// splice per list, so a thousand services are one change, not a
    /// thousand.
    fn add(&self, snapshots: Vec<ServiceSnapshot>) {
        let mut new_plain = Vec::new();
        let mut new_instances: BTreeMap<String, Vec<ServiceObject>> = BTreeMap::new();
        for snapshot in snapshots {
            if let Some(service) = self.service(&snapshot.path) {
                let state_before = service.fields().state.clone();
                if service.update(snapshot.properties) {
                    self.row_changed(&service);
                }
                service.emit_changed();
                if service.fields().state != state_before {
                    self.group_of_changed(&service);
                }
                continue;
            }
            let service = ServiceObject::service(&snapshot.path);
            service.update(snapshot.properties);
            if let Some(timeline) = self.retired.borrow_mut().remove(&snapshot.path) {
                *service.timeline_mut() = timeline;
            }
            self.services
                .borrow_mut()
                .insert(snapshot.path.clone(), service.clone());
            let template = service.fields().template.clone();
            if template.is_empty() {
                new_plain.push(service);
            } else {
                new_instances.entry(template).or_default().push(service);
            }
        }
        for (template, instances) in new_instances {
            let (group, is_new) = self.group(&template);
            if let Some(children) = group.children() {
                children.splice(children.n_items(), 0, &instances);
            }
            group.aggregate();
            if is_new {
                new_plain.push(group);
            } else {
                group.emit_changed();
                self.group_changed(&group);
            }
        }
        if !new_plain.is_empty() {
            self.root.splice(self.root.n_items(), 0, &new_plain);
        }
    }

    /// The group of `template`, made if need be; and whether it is new
    /// (not in the root list yet).
    fn group(&self, template: &str) -> (ServiceObject, bool) {
        let mut groups = self.groups.borrow_mut();
        if let Some(group) = groups.get(template) {
            return (group.clone(), false);
        }
        let group = ServiceObject::group(template);
        groups.insert(template.to_owned(), group.clone());
        (group, true)
    }

    /// Takes a service's row out of its list, and its group with it if
    /// that was the last instance.
    fn detach(&self, service: &ServiceObject) {
        let template = service.fields().template.clone();
        if template.is_empty() {
            remove_from(&self.root, service);
            return;
        }
        let Some(group) = self.groups.borrow().get(&template).cloned() else {
            return;
        };
        if let Some(children) = group.children() {
            remove_from(children, service);
            if children.n_items() == 0 {
                self.groups.borrow_mut().remove(&template);
                remove_from(&self.root, &group);
                return;
            }
        }
        group.aggregate();
        group.emit_changed();
        self.group_changed(&group);
    }

    /// Forgets every service, keeping their timelines aside.
    fn clear(&self) {
        let services: Vec<ServiceObject> =
            self.services.borrow_mut().drain().map(|e| e.1).collect();
        let mut retired = self.retired.borrow_mut();
        for service in services {
            retired.insert(service.path(), service.timeline().clone());
        }
        self.groups.borrow_mut().clear();
        self.root.remove_all();
    }

    /// Notes that the service's row may have moved, for [`Model::flush`].
    fn row_changed(&self, service: &ServiceObject) {
        let mut moved = self.moved.borrow_mut();
        if moved.1.insert(service.path()) {
            moved.0.push(service.clone());
        }
    }

    fn group_of_changed(&self, service: &ServiceObject) {
        let template = service.fields().template.clone();
        let group = self.groups.borrow().get(&template).cloned();
        if let Some(group) = group {
            let before = (group.fields().state.clone(), group.summary());
            group.aggregate();
            if (group.fields().state.clone(), group.summary()) != before {
                group.emit_changed();
                self.group_changed(&group);
            }
        }
    }

    fn group_changed(&self, _group: &ServiceObject) {
        self.order_changed();
    }

    fn order_changed(&self) {
        for listener in self.order_listeners.borrow().iter() {
            listener();
        }
    }

    fn tally_changed(&self) {
        for listener in self.tally_listeners.borrow().iter() {
            listener(self);
        }
    }

    fn set_availability(&self, availability: Availability) {
        if *self.availability.borrow() == availability {
            return;
        }
        *self.availability.borrow_mut() = availability.clone();
        for listener in self.availability_listeners.borrow().iter() {
            listener(&availability);
        }
    }
}

fn remove_from(list: &gio::ListStore, service: &ServiceObject) {
    if let Some(position) = list.find(service) {
        list.remove(position);
    }
}

/// Shorthand for tests and benchmarks: a snapshot of a service `name`
/// with these properties.
pub fn snapshot_of(name: &str, properties: &[(&str, Value)]) -> ServiceSnapshot {
    ServiceSnapshot {
        path: adoptd_dbus::service_path(name).to_string(),
        properties: std::iter::once(("Name".to_owned(), Value::Text(name.to_owned())))
            .chain(
                properties
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.clone())),
            )
            .collect(),
    }
}

#[cfg(test)]
mod tests;
