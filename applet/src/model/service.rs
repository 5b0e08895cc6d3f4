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
    pub fn summary(&self) -> String {
        self.imp().summary.borrow().clone()
    }

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
        let before = self.fields().clone();
        {
            let mut known = self.imp().properties.borrow_mut();
            for (name, value) in properties {
                known.insert(name, value);
            }
            let fields = fields_of(&self.path(), &known);
            *self.imp().fields.borrow_mut() = fields;
        }
        *self.fields() != before
    }

    pub(crate) fn timeline_mut(&self) -> std::cell::RefMut<'_, Timeline> {
        self.imp().timeline.borrow_mut()
    }

    /// Recomputes a group's state and summary from its instances.
    pub(crate) fn aggregate(&self) {
        let Some(children) = self.children() else {
            return;
        };
        let mut counts: BTreeMap<(u8, String), u32> = BTreeMap::new();
        for child in children.iter::<ServiceObject>().flatten() {
            let state = look::words(&child.fields().state);
            let urgency = look::look(&child.fields().state).urgency;
            *counts.entry((urgency, state)).or_default() += 1;
        }
        let worst = counts
            .keys()
            .next()
            .map(|(_, state)| state.clone())
            .unwrap_or_default();
        let summary: Vec<String> = counts
            .iter()
            .map(|((_, state), count)| format!("{count} {state}"))
            .collect();
        // A group shows its most urgent state, spelt as adoptd spells it.
        let worst = children
            .iter::<ServiceObject>()
            .flatten()
            .map(|child| child.fields().state.clone())
            .find(|state| look::words(state) == worst)
            .unwrap_or_default();
        self.imp().fields.borrow_mut().state = worst;
        *self.imp().summary.borrow_mut() = summary.join(", ");
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

    #[derive(Default)]
    pub struct ServiceObject {
        pub path: RefCell<String>,
        pub fields: RefCell<Fields>,
        pub properties: RefCell<BTreeMap<String, Value>>,
        pub timeline: RefCell<Timeline>,
        pub summary: RefCell<String>,
        pub children: OnceCell<gio::ListStore>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ServiceObject {
        const NAME: &'static str = "AdoptdServiceObject";
        type Type = super::ServiceObject;
    }

    impl ObjectImpl for ServiceObject {
        fn signals() -> &'static [Signal] {
            static SIGNALS: OnceLock<Vec<Signal>> = OnceLock::new();
            SIGNALS.get_or_init(|| vec![Signal::builder("changed").build()])
        }
    }
}
