//! The bus layer's copy of what it publishes, by service: kept current
//! from every update of the supervisor, whether or not a bus is
//! connected, so that a reconnect publishes everything again without the
//! supervisor repeating itself.

use std::sync::Arc;

use super::Update;
use crate::{
    config::ServiceSpec,
    supervisor::Load,
    tracker::{Notice, ServiceId, Status},
};

/// The bus layer's copy of what it publishes, by service.
#[derive(Default)]
pub(super) struct Registry {
    /// Indexed by `ServiceId`; ids are dense and never reused.
    pub(super) services: Vec<Option<Entry>>,
    /// Every service's id, sorted by its name: how a call's object path
    /// finds its service (four bytes a service).
    by_name: Vec<ServiceId>,
    pub(super) orphans_reaped: u64,
    /// Updates applied so far, in the supervisor's order.
    pub(super) applied: u64,
}

#[derive(Clone)]
pub(super) struct Entry {
    pub(super) id: ServiceId,
    pub(super) spec: Arc<ServiceSpec>,
    pub(super) status: Status,
    /// Whether its file loaded.
    pub(super) load: Load,
    /// Why its last start could not run the program; empty when it could.
    pub(super) exec_error: String,
    /// The last `STATUS=` it sent.
    pub(super) status_text: String,
    /// Whether its object is served on the current connection.
    pub(super) published: bool,
}

impl Registry {
    pub(super) fn apply(&mut self, update: &Update) {
        self.applied += 1;
        match update {
            Update::ServiceAdded {
                service,
                spec,
                status,
                load,
            } => {
                let index = service.index();
                if self.services.len() <= index {
                    self.services.resize_with(index + 1, || None);
                }
                let known = self.services[index].as_ref();
                let published = known.is_some_and(|e| e.published);
                if known.is_none()
                    && let Err(at) = self.position(&spec.name)
                {
                    self.by_name.insert(at, *service);
                }
                self.services[index] = Some(Entry {
                    id: *service,
                    spec: Arc::clone(spec),
                    status: *status,
                    load: load.clone(),
                    exec_error: String::new(),
                    status_text: String::new(),
                    published,
                });
            }
            Update::Configured {
                service,
                spec,
                load,
            } => {
                if let Some(entry) = self.get_mut(*service) {
                    entry.spec = Arc::clone(spec);
                    entry.load = load.clone();
                }
            }
            Update::ExecError { service, error } => {
                if let Some(entry) = self.get_mut(*service) {
                    entry.exec_error.clone_from(error);
                }
            }
            Update::StatusText { service, text } => {
                if let Some(entry) = self.get_mut(*service) {
                    entry.status_text.clone_from(text);
                }
            }
            Update::Tracker(Notice::Changed {
                service, status, ..
            }) => {
                if let Some(entry) = self.get_mut(*service) {
                    entry.status = *status;
                }
            }
            Update::Tracker(Notice::OrphanReaped { total, .. })
            | Update::OrphansReaped { total } => {
                self.orphans_reaped = *total;
            }
            Update::ServiceRemoved { service, name } => {
                if let Ok(at) = self.position(name) {
                    self.by_name.remove(at);
                }
                if let Some(entry) = self.services.get_mut(service.index()) {
                    *entry = None;
                }
            }
            Update::Tracker(Notice::Adopted { .. } | Notice::Exited { .. })
            | Update::Restored
            | Update::Flush(_) => {}
        }
    }

    pub(super) fn get(&self, service: ServiceId) -> Option<&Entry> {
        self.services.get(service.index())?.as_ref()
    }

    pub(super) fn get_mut(&mut self, service: ServiceId) -> Option<&mut Entry> {
        self.services.get_mut(service.index())?.as_mut()
    }

    /// The service named `name`.
    pub(super) fn find(&self, name: &str) -> Option<ServiceId> {
        let at = self.position(name).ok()?;
        self.by_name.get(at).copied()
    }

    /// Where `name` is in [`Registry::by_name`], or would be inserted.
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.by_name.binary_search_by(|service| {
            self.get(*service)
                .map_or("", |entry| entry.spec.name.as_str())
                .cmp(name)
        })
    }

    /// Whether any service object is published on the connection.
    pub(super) fn any_published(&self) -> bool {
        self.entries().any(|e| e.published)
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.services.iter().flatten()
    }

    pub(super) fn is_published(&self, service: ServiceId) -> bool {
        self.get(service).is_some_and(|e| e.published)
    }

    /// The services whose objects are not served yet.
    pub(super) fn unpublished(&self) -> Vec<ServiceId> {
        self.entries()
            .filter(|e| !e.published)
            .map(|e| e.id)
            .collect()
    }

    pub(super) fn set_published(&mut self, service: ServiceId) {
        if let Some(entry) = self.get_mut(service) {
            entry.published = true;
        }
    }

    pub(super) fn unpublish_all(&mut self) {
        for entry in self.services.iter_mut().flatten() {
            entry.published = false;
        }
    }
}
