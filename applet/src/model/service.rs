//! `ServiceObject`: one row of the window, a GObject so that list models
//! can hold it. It is either a service (plain, or an instance of a
//! template) or a template's group, whose children are its instances.
//!
//! Only the [`Model`](crate::model::Model) changes an object; every change
//! ends with the `changed` signal, which the detail pane and group rows
//! follow. Rows of services are re-bound by the model's `items_changed`
//! instead, which also lets the sorted view move them.

use std::{
    cell::{Ref, RefCell},
    collections::BTreeMap,
    sync::OnceLock,
};

use gtk::{gio, glib, glib::subclass::Signal, prelude::*, subclass::prelude::*};

use crate::{
    event::Value,
    model::{look, timeline::Timeline},
};

glib::wrapper! {
    /// A service, or a template's group of instances.
    pub struct ServiceObject(ObjectSubclass<imp::ServiceObject>);
}

/// What a row shows of a service, read from its properties.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    pub name: String,
    /// The template, for an instance; empty for a plain service.
    pub template: String,
    pub instance: String,
    /// The raw `State` string; see [`look`].
    pub state: String,
    pub main_pid: u32,
    pub previous_pid: u32,
    pub handoffs: u32,
    pub restarts: u32,
    /// `StateChangeTimestamp`, µs since the epoch, 0 when unknown.
    pub since: u64,
}

impl ServiceObject {
    /// A service object at `path`, with no properties yet.
    pub fn service(path: &str) -> Self {
        let object: Self = glib::Object::new();
        *object.imp().path.borrow_mut() = path.to_owned();
        object
    }

    /// The group of `template`'s instances, empty.
    pub fn group(template: &str) -> Self {
        let object: Self = glib::Object::new();
        object.imp().fields.borrow_mut().name = template.to_owned();
        object
            .imp()
            .children
            .set(gio::ListStore::new::<ServiceObject>())
            .ok();
        object
    }

    /// The object path; empty for a group.
    pub fn path(&self) -> String {
        self.imp().path.borrow().clone()
    }

    pub fn fields(&self) -> Ref<'_, Fields> {
        self.imp().fields.borrow()
    }

    /// Every property as last read or signalled, by name.
    pub fn properties(&self) -> Ref<'_, BTreeMap<String, Value>> {
        self.imp().properties.borrow()
    }

    pub fn timeline(&self) -> Ref<'_, Timeline> {
        self.imp().timeline.borrow()
    }

    /// A group's instances; `None` for a service.
    pub fn children(&self) -> Option<&gio::ListStore> {
        self.imp().children.get()
    }

    pub fn is_group(&self) -> bool {
        self.children().is_some()
    }

    /// The text after the state word: for a group, how many instances are
    /// in which state ("2 running, 1 failed").
    /// Whether the row counts as failed (a group: any of its instances).
    pub fn is_failed(&self) -> bool {
        look::look(&self.fields().state).urgency == 0
    }

    /// Follows every change of this object.
    pub fn connect_changed<F: Fn(&Self) + 'static>(&self, callback: F) -> glib::SignalHandlerId {
        self.connect_local("changed", false, move |values| {
            if let Some(Ok(object)) = values.first().map(|value| value.get::<Self>()) {
                callback(&object);
            }
            None
        })
    }

    // The model's side.

    /// Sets the properties in `properties` (the others keep their value)
    /// and recomputes the fields; returns whether a shown field changed.
    pub(crate) fn update(&self, properties: Vec<(String, Value)>) -> bool {
        let fields = {
            let mut known = self.imp().properties.borrow_mut();
            for (name, value) in properties {
                known.insert(name, value);
            }
            fields_of(&self.path(), &known)
        };
        self.set_fields(fields)
    }

    /// Replaces the fields and notifies the properties that changed;
    /// returns whether any did.
    fn set_fields(&self, fields: Fields) -> bool {
        let before = std::mem::replace(&mut *self.imp().fields.borrow_mut(), fields);
        let after = self.fields().clone();
        let changed = [
            ("name", before.name != after.name),
            ("state", before.state != after.state),
            ("urgency", before.state != after.state),
            ("main-pid", before.main_pid != after.main_pid),
            ("previous-pid", before.previous_pid != after.previous_pid),
            ("handoffs", before.handoffs != after.handoffs),
            ("restarts", before.restarts != after.restarts),
            ("since", before.since != after.since),
        ];
        let mut any = false;
        for (property, differs) in changed {
            if differs {
                self.notify(property);
                any = true;
            }
        }
        any
    }

    pub(crate) fn timeline_mut(&self) -> std::cell::RefMut<'_, Timeline> {
        self.imp().timeline.borrow_mut()
    }

    /// Recomputes a group's fields from its instances: the most urgent
    /// state, the sums of hand-offs and restarts, the latest change.
    pub(crate) fn aggregate(&self) {
        let Some(children) = self.children() else {
            return;
        };
        let mut counts: BTreeMap<(u8, String), u32> = BTreeMap::new();
        let mut fields = Fields {
            name: self.fields().name.clone(),
            ..Fields::default()
        };
        let mut worst: Option<(u8, String)> = None;
        for child in children.iter::<ServiceObject>().flatten() {
            let child = child.fields();
            let urgency = look::look(&child.state).urgency;
            *counts
                .entry((urgency, look::words(&child.state)))
                .or_default() += 1;
            if worst.as_ref().is_none_or(|(most, _)| urgency < *most) {
                worst = Some((urgency, child.state.clone()));
            }
            fields.handoffs = fields.handoffs.saturating_add(child.handoffs);
            fields.restarts = fields.restarts.saturating_add(child.restarts);
            fields.since = fields.since.max(child.since);
        }
        fields.state = worst.map(|(_, state)| state).unwrap_or_default();
        let summary: Vec<String> = counts
            .iter()
            .map(|((_, state), count)| format!("{count} {state}"))
            .collect();
        let summary = summary.join(", ");
        if *self.imp().summary.borrow() != summary {
            *self.imp().summary.borrow_mut() = summary;
            self.notify("summary");
        }
        self.set_fields(fields);
    }

    pub(crate) fn emit_changed(&self) {
        self.emit_by_name::<()>("changed", &[]);
    }
}

/// The fields of the service at `path`, from what is known of its
/// properties; anything missing or of another type reads as unknown.
fn fields_of(path: &str, properties: &BTreeMap<String, Value>) -> Fields {
    let text = |name: &str| {
        properties
            .get(name)
            .and_then(Value::as_text)
            .unwrap_or_default()
            .to_owned()
    };
    let number = |name: &str| {
        properties
            .get(name)
            .and_then(Value::as_u32)
            .unwrap_or_default()
    };
    let mut name = text("Name");
    if name.is_empty() {
        name = path
            .strip_prefix(adoptd_dbus::SERVICE_PATH_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(adoptd_dbus::unescape_label)
            .unwrap_or_else(|| path.to_owned());
    }
    let (mut template, mut instance) = (text("Template"), text("Instance"));
    if instance.is_empty() {
        // Older adoptd, or properties not read yet: the name says it.
        if let Some((before, after)) = name.split_once('@') {
            template = before.to_owned();
            instance = after.to_owned();
        }
    }
    if instance.is_empty() {
        template.clear();
    }
    Fields {
        name,
        template,
        instance,
        state: text("State"),
        main_pid: number("MainPID"),
        previous_pid: number("PreviousPID"),
        handoffs: number("Handoffs"),
        restarts: number("Restarts"),
        since: properties
            .get("StateChangeTimestamp")
            .and_then(Value::as_u64)
            .unwrap_or_default(),
    }
}

mod imp {
    use std::cell::OnceCell;

    use super::*;

    #[derive(Default, glib::Properties)]
    #[properties(wrapper_type = super::ServiceObject)]
    pub struct ServiceObject {
        pub path: RefCell<String>,
        #[property(name = "name", get, type = String, member = name)]
        #[property(name = "state", get, type = String, member = state)]
        #[property(name = "main-pid", get, type = u32, member = main_pid)]
        #[property(name = "previous-pid", get, type = u32, member = previous_pid)]
        #[property(name = "handoffs", get, type = u32, member = handoffs)]
        #[property(name = "restarts", get, type = u32, member = restarts)]
        #[property(name = "since", get, type = u64, member = since)]
        pub fields: RefCell<Fields>,
        /// For a group: how many instances are in which state.
        #[property(get)]
        pub summary: RefCell<String>,
        /// 0 for failed, upwards to the steady states (see `look`).
        #[property(name = "urgency", get = Self::urgency, type = u32)]
        pub properties: RefCell<BTreeMap<String, Value>>,
        pub timeline: RefCell<Timeline>,
        pub children: OnceCell<gio::ListStore>,
    }

    impl ServiceObject {
        fn urgency(&self) -> u32 {
            u32::from(look::look(&self.fields.borrow().state).urgency)
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ServiceObject {
        const NAME: &'static str = "AdoptdServiceObject";
        type Type = super::ServiceObject;
    }

    #[glib::derived_properties]
    impl ObjectImpl for ServiceObject {
        fn signals() -> &'static [Signal] {
            static SIGNALS: OnceLock<Vec<Signal>> = OnceLock::new();
            SIGNALS.get_or_init(|| vec![Signal::builder("changed").build()])
        }
    }
}
