//! The status window: a thin view over the [`Model`].
//!
//! - `window.ui`: the layout (composite template);
//! - [`columns`]: the list's columns, bound to the model by expressions;
//! - [`detail`]: the selected service;
//! - [`clock`]: the time the "since" texts count from.
//!
//! The list is the model's root store, filtered by the search text, made a
//! tree (instances under their template), sorted by the clicked column
//! (failed first on request), and selected one at a time. Nothing here
//! changes the model.

pub mod clock;
pub mod columns;
pub mod detail;

use std::{cell::Cell, cell::RefCell, rc::Rc};

use gtk::{gio, glib, prelude::*, subclass::prelude::*};
use tokio::sync::mpsc;

use self::{clock::Clock, detail::Detail};
use crate::{
    event::{Control, Request},
    model::{Availability, Model, ServiceObject, Tally},
};

glib::wrapper! {
    pub struct Window(ObjectSubclass<imp::Window>)
        @extends gtk::ApplicationWindow, gtk::Window, gtk::Widget,
        @implements gio::ActionGroup, gio::ActionMap, gtk::Accessible, gtk::Buildable,
            gtk::ConstraintTarget, gtk::Native, gtk::Root, gtk::ShortcutManager;
}

impl Window {
    /// The window over `model`; controls go to `requests`. With `show`,
    /// that service is selected once it appears.
    pub fn new(
        application: &gtk::Application,
        model: &Rc<Model>,
        requests: mpsc::UnboundedSender<Request>,
        show: Option<String>,
    ) -> Self {
        let window: Self = glib::Object::builder()
            .property("application", application)
            .build();
        window.build(model, requests, show);
        window
    }

    fn build(
        &self,
        model: &Rc<Model>,
        requests: mpsc::UnboundedSender<Request>,
        show: Option<String>,
    ) {
        let imp = self.imp();
        let clock = Clock::new();
        columns::install(&imp.services, &clock);

        let search_text = Rc::new(RefCell::new(String::new()));
        let instance_filter = {
            let search_text = search_text.clone();
            gtk::CustomFilter::new(move |item| {
                let text = search_text.borrow();
                item.downcast_ref::<ServiceObject>()
                    .is_some_and(|service| matches(service, &text))
            })
        };
        let root_filter = {
            let search_text = search_text.clone();
            gtk::CustomFilter::new(move |item| {
                let text = search_text.borrow();
                let Some(service) = item.downcast_ref::<ServiceObject>() else {
                    return false;
                };
                matches(service, &text)
                    || service.children().is_some_and(|children| {
                        children
                            .iter::<ServiceObject>()
                            .flatten()
                            .any(|child| matches(&child, &text))
                    })
            })
        };
        let filtered =
            gtk::FilterListModel::new(Some(model.root().clone()), Some(root_filter.clone()));
        let tree = {
            let instance_filter = instance_filter.clone();
            gtk::TreeListModel::new(filtered, false, true, move |item| {
                let children = item.downcast_ref::<ServiceObject>()?.children()?.clone();
                Some(
                    gtk::FilterListModel::new(Some(children), Some(instance_filter.clone()))
                        .upcast(),
                )
            })
        };
        let failed_first_on = Rc::new(Cell::new(false));
        let failed_first = {
            let on = failed_first_on.clone();
            gtk::CustomSorter::new(move |a, b| {
                if !on.get() {
                    return gtk::Ordering::Equal;
                }
                let failed = |item: &glib::Object| {
                    item.downcast_ref::<ServiceObject>()
                        .is_some_and(ServiceObject::is_failed)
                };
                failed(b).cmp(&failed(a)).into()
            })
        };
        let sorter = gtk::MultiSorter::new();
        sorter.append(failed_first.clone());
        if let Some(by_column) = imp.services.sorter() {
            sorter.append(by_column);
        }
        let rows_sorter = gtk::TreeListRowSorter::new(Some(sorter.clone()));
        let sorted = gtk::SortListModel::new(Some(tree), Some(rows_sorter));
        let selection = gtk::SingleSelection::new(Some(sorted));
        imp.services.set_model(Some(&selection));
        imp.selection.replace(Some(selection.clone()));
        if let Some(first) = imp
            .services
            .columns()
            .item(0)
            .and_downcast::<gtk::ColumnViewColumn>()
        {
            imp.services
                .sort_by_column(Some(&first), gtk::SortType::Ascending);
        }

        imp.search.connect_search_changed(move |entry| {
            *search_text.borrow_mut() = entry.text().to_lowercase();
            root_filter.changed(gtk::FilterChange::Different);
            instance_filter.changed(gtk::FilterChange::Different);
        });
        {
            let failed_first = failed_first.clone();
            imp.failed_first.connect_toggled(move |button| {
                failed_first_on.set(button.is_active());
                failed_first.changed(gtk::SorterChange::Different);
            });
        }
        // A group's order depends on its instances, which its own list
        // does not see change; and many rows changed at once are one sort.
        model.connect_order_changed(move || sorter.changed(gtk::SorterChange::Different));

        let detail = Detail::new(
            detail::Widgets {
                name: imp.detail_name.get(),
                state: imp.detail_state.get(),
                refusal: imp.refusal.get(),
                timeline: imp.timeline.get(),
                processes: imp.processes.get(),
                properties: imp.properties.get(),
                controls: imp.controls.get(),
                buttons: vec![
                    (Control::Start, imp.start.get()),
                    (Control::Stop, imp.stop.get()),
                    (Control::Restart, imp.restart.get()),
                    (Control::Reload, imp.reload.get()),
                ],
            },
            &clock,
            requests,
        );
        selection.connect_selected_item_notify(move |selection| {
            let service = selection
                .selected_item()
                .and_downcast::<gtk::TreeListRow>()
                .and_then(|row| row.item())
                .and_downcast::<ServiceObject>();
            detail.show(service);
        });

        let wanted = RefCell::new(show);
        {
            let window = self.downgrade();
            let selection = selection.clone();
            model.connect_tally(move |model| {
                if let Some(window) = window.upgrade() {
                    window.show_tally(&model.tally());
                }
                let mut wanted = wanted.borrow_mut();
                if let Some(name) = wanted.as_deref()
                    && select_named(&selection, name)
                {
                    *wanted = None;
                }
            });
        }
        let window = self.downgrade();
        model.connect_availability(move |availability| {
            if let Some(window) = window.upgrade() {
                window.show_availability(availability);
            }
        });
        self.show_availability(&model.availability());
    }

    /// Selects the service `name`, as `--show NAME` does; false if it is
    /// not shown.
    pub fn select_service(&self, name: &str) -> bool {
        let selection = self.imp().selection.borrow().clone();
        selection.is_some_and(|selection| select_named(&selection, name))
    }

    fn show_availability(&self, availability: &Availability) {
        let imp = self.imp();
        match availability {
            Availability::Connecting => {
                imp.connecting.set_label("Looking for adoptd…");
                imp.pages.set_visible_child_name("connecting");
            }
            Availability::Listing { bus } => {
                imp.connecting
                    .set_label(&format!("Reading adoptd's services on the {bus}…"));
                imp.pages.set_visible_child_name("connecting");
            }
            Availability::Live { bus } => {
                imp.pages.set_visible_child_name("services");
                self.set_title(Some(&format!("adoptd status — {bus}")));
            }
            Availability::Gone { reason } => {
                imp.gone_reason.set_label(reason);
                imp.pages.set_visible_child_name("gone");
                self.set_title(Some("adoptd status — adoptd is not running"));
            }
        }
    }

    fn show_tally(&self, tally: &Tally) {
        let states: Vec<String> = tally
            .by_state
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        let services = if tally.total == 1 {
            "service"
        } else {
            "services"
        };
        self.imp().tally.set_label(&format!(
            "{} {services}: {}",
            tally.total,
            states.join(", ")
        ));
    }
}

/// Whether `service`'s name holds `text` (already lower-case).
fn matches(service: &ServiceObject, text: &str) -> bool {
    text.is_empty() || service.fields().name.to_lowercase().contains(text)
}

/// Selects the row of the service `name`; false if it is not shown.
fn select_named(selection: &gtk::SingleSelection, name: &str) -> bool {
    let found = (0..selection.n_items()).find(|&position| {
        selection
            .item(position)
            .and_downcast::<gtk::TreeListRow>()
            .and_then(|row| row.item())
            .and_downcast::<ServiceObject>()
            .is_some_and(|service| service.fields().name == name)
    });
    if let Some(position) = found {
        selection.set_selected(position);
    }
    found.is_some()
}

mod imp {
    use super::*;

    #[derive(Default, gtk::CompositeTemplate)]
    #[template(file = "window.ui")]
    pub struct Window {
        #[template_child]
        pub search: TemplateChild<gtk::SearchEntry>,
        #[template_child]
        pub failed_first: TemplateChild<gtk::ToggleButton>,
        #[template_child]
        pub pages: TemplateChild<gtk::Stack>,
        #[template_child]
        pub connecting: TemplateChild<gtk::Label>,
        #[template_child]
        pub gone_reason: TemplateChild<gtk::Label>,
        #[template_child]
        pub services: TemplateChild<gtk::ColumnView>,
        #[template_child]
        pub tally: TemplateChild<gtk::Label>,
        #[template_child]
        pub detail_name: TemplateChild<gtk::Label>,
        #[template_child]
        pub detail_state: TemplateChild<gtk::Label>,
        #[template_child]
        pub controls: TemplateChild<gtk::Box>,
        #[template_child]
        pub start: TemplateChild<gtk::Button>,
        #[template_child]
        pub stop: TemplateChild<gtk::Button>,
        #[template_child]
        pub restart: TemplateChild<gtk::Button>,
        #[template_child]
        pub reload: TemplateChild<gtk::Button>,
        #[template_child]
        pub refusal: TemplateChild<gtk::Label>,
        #[template_child]
        pub timeline: TemplateChild<gtk::Label>,
        #[template_child]
        pub processes: TemplateChild<gtk::Label>,
        #[template_child]
        pub properties: TemplateChild<gtk::Grid>,
        /// The list's selection, for [`super::Window::select_service`].
        pub selection: RefCell<Option<gtk::SingleSelection>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Window {
        const NAME: &'static str = "AdoptdWindow";
        type Type = super::Window;
        type ParentType = gtk::ApplicationWindow;

        fn class_init(class: &mut Self::Class) {
            class.bind_template();
        }

        fn instance_init(object: &glib::subclass::InitializingObject<Self>) {
            object.init_template();
        }
    }

    impl ObjectImpl for Window {}
    impl WidgetImpl for Window {}
    impl WindowImpl for Window {}
    impl ApplicationWindowImpl for Window {}
}
