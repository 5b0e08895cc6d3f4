//! The detail pane: the selected service's properties, processes and
//! hand-off timeline, and its control buttons.
//!
//! It follows the selected object's `changed` signal, and asks the bus
//! side for what is not signalled (`PIDs`) when the main process changes.
//! A refused control shows adoptd's sentence as it came.

use std::{cell::RefCell, rc::Rc};

use gtk::{glib, prelude::*};
use tokio::sync::{mpsc, oneshot};

use crate::{
    event::{Control, Request},
    model::{ServiceObject, look},
    process_tree,
    window::{clock::Clock, columns::state_text},
};

/// The pane's widgets, from the window's template.
pub struct Widgets {
    pub name: gtk::Label,
    pub state: gtk::Label,
    pub refusal: gtk::Label,
    pub timeline: gtk::Label,
    pub processes: gtk::Label,
    pub properties: gtk::Grid,
    pub controls: gtk::Box,
    pub buttons: Vec<(Control, gtk::Button)>,
}

/// The pane, showing one service or none.
pub struct Detail {
    widgets: Widgets,
    clock: Clock,
    requests: mpsc::UnboundedSender<Request>,
    shown: RefCell<Option<(ServiceObject, glib::SignalHandlerId)>>,
    /// The main PID the process tree was last read for.
    processes_of: RefCell<Option<(String, u32)>>,
    /// The grid's rows: each property's name and the label of its value.
    property_rows: RefCell<Vec<(String, gtk::Label)>>,
}

impl Detail {
    pub fn new(
        widgets: Widgets,
        clock: &Clock,
        requests: mpsc::UnboundedSender<Request>,
    ) -> Rc<Self> {
        let detail = Rc::new(Detail {
            widgets,
            clock: clock.clone(),
            requests,
            shown: RefCell::default(),
            processes_of: RefCell::default(),
            property_rows: RefCell::default(),
        });
        for (control, button) in &detail.widgets.buttons {
            let weak = Rc::downgrade(&detail);
            let control = *control;
            button.connect_clicked(move |_| {
                if let Some(detail) = weak.upgrade() {
                    detail.control(control);
                }
            });
        }
        let weak = Rc::downgrade(&detail);
        clock.connect_notify_local(Some("now"), move |_, _| {
            if let Some(detail) = weak.upgrade() {
                detail.refresh_timeline();
            }
        });
        detail.show(None);
        detail
    }

    /// Shows `service` (or nothing) from now on.
    pub fn show(self: &Rc<Self>, service: Option<ServiceObject>) {
        if let Some((old, handler)) = self.shown.borrow_mut().take() {
            old.disconnect(handler);
        }
        self.widgets.refusal.set_visible(false);
        *self.processes_of.borrow_mut() = None;
        if let Some(service) = service {
            let weak = Rc::downgrade(self);
            let handler = service.connect_changed(move |_| {
                if let Some(detail) = weak.upgrade() {
                    detail.refresh();
                }
            });
            *self.shown.borrow_mut() = Some((service, handler));
        }
        self.refresh();
    }

    fn service(&self) -> Option<ServiceObject> {
        self.shown
            .borrow()
            .as_ref()
            .map(|(service, _)| service.clone())
    }

    fn refresh(self: &Rc<Self>) {
        let widgets = &self.widgets;
        let Some(service) = self.service() else {
            widgets.name.set_label("No service selected");
            widgets.state.set_label("");
            widgets.controls.set_sensitive(false);
            widgets.timeline.set_label("");
            widgets.processes.set_label("");
            self.fill_properties(&[]);
            return;
        };
        let fields = service.fields().clone();
        widgets.name.set_label(&fields.name);
        widgets
            .state
            .set_label(&state_text(&fields.state, &service.summary()));
        widgets
            .state
            .set_css_classes(&["state", look::look(&fields.state).css_class]);
        widgets.controls.set_sensitive(!service.is_group());
        if service.is_group() {
            let instances: Vec<String> = service
                .children()
                .map(|children| {
                    children
                        .iter::<ServiceObject>()
                        .flatten()
                        .map(|child| child.fields().name.clone())
                        .collect()
                })
                .unwrap_or_default();
            widgets.timeline.set_label("");
            widgets.processes.set_label("");
            self.fill_properties(&[("Instances".to_owned(), instances.join("\n"))]);
            return;
        }
        // PIDs is not signalled: the process tree above reads it afresh.
        let properties: Vec<(String, String)> = service
            .properties()
            .iter()
            .filter(|(name, _)| name.as_str() != "PIDs")
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect();
        self.fill_properties(&properties);
        self.refresh_timeline();
        let wanted = Some((service.path(), fields.main_pid));
        if *self.processes_of.borrow() != wanted {
            *self.processes_of.borrow_mut() = wanted;
            self.read_processes(&service);
        }
    }

    fn refresh_timeline(&self) {
        let Some(service) = self.service() else {
            return;
        };
        let now = self.clock.now();
        let timeline = service.timeline();
        let text = if timeline.is_empty() {
            "None since the applet started.".to_owned()
        } else {
            timeline
                .entries()
                .rev()
                .map(|entry| entry.describe(now))
                .collect::<Vec<_>>()
                .join("\n")
        };
        self.widgets.timeline.set_label(&text);
    }

    fn read_processes(self: &Rc<Self>, service: &ServiceObject) {
        let (reply, answer) = oneshot::channel();
        let path = service.path();
        if self
            .requests
            .send(Request::Pids {
                path: path.clone(),
                reply,
            })
            .is_err()
        {
            return;
        }
        let weak = Rc::downgrade(self);
        glib::spawn_future_local(async move {
            let text = match answer.await {
                Ok(Ok(pids)) if pids.is_empty() => "No process.".to_owned(),
                Ok(Ok(pids)) => process_tree::render(&pids, process_tree::read_process),
                Ok(Err(sentence)) => sentence,
                Err(_) => "adoptd is not running".to_owned(),
            };
            if let Some(detail) = weak.upgrade()
                && detail.service().map(|s| s.path()) == Some(path)
            {
                detail.widgets.processes.set_label(&text);
            }
        });
    }

    /// Shows one grid row per property: the values are set in place while
    /// the names stay the same (a change of main PID is one label's text,
    /// not a new grid); the rows are made anew when the names change.
    fn fill_properties(&self, properties: &[(String, String)]) {
        let grid = &self.widgets.properties;
        let mut rows = self.property_rows.borrow_mut();
        let same_names = rows.len() == properties.len()
            && rows
                .iter()
                .zip(properties)
                .all(|((shown, _), (name, _))| shown == name);
        if same_names {
            for ((_, label), (_, value)) in rows.iter().zip(properties) {
                if label.label() != *value {
                    label.set_label(value);
                }
            }
            return;
        }
        while let Some(child) = grid.first_child() {
            grid.remove(&child);
        }
        rows.clear();
        for (row, (name, value)) in (0..).zip(properties) {
            let key = gtk::Label::new(Some(name));
            key.set_xalign(0.0);
            key.set_yalign(0.0);
            key.add_css_class("dim-label");
            let label = gtk::Label::new(Some(value));
            label.set_xalign(0.0);
            label.set_wrap(true);
            label.set_selectable(true);
            label.set_hexpand(true);
            grid.attach(&key, 0, row, 1, 1);
            grid.attach(&label, 1, row, 1, 1);
            rows.push((name.clone(), label));
        }
    }

    fn control(self: &Rc<Self>, control: Control) {
        let Some(service) = self.service() else {
            return;
        };
        let path = service.path();
        let (reply, answer) = oneshot::channel();
        self.widgets.refusal.set_visible(false);
        if self
            .requests
            .send(Request::Control {
                path: path.clone(),
                control,
                reply,
            })
            .is_err()
        {
            return;
        }
        let weak = Rc::downgrade(self);
        glib::spawn_future_local(async move {
            let refusal = match answer.await {
                Ok(Ok(())) => None,
                Ok(Err(sentence)) => Some(sentence),
                Err(_) => Some("adoptd is not running".to_owned()),
            };
            let Some(detail) = weak.upgrade() else {
                return;
            };
            if detail.service().map(|s| s.path()) != Some(path) {
                return;
            }
            if let Some(sentence) = refusal {
                detail.widgets.refusal.set_label(&sentence);
                detail.widgets.refusal.set_visible(true);
            }
        });
    }
}
