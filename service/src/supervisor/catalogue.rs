//! The supervisor's catalogue: the service files as loaded, the names they
//! define, the templates for instances made on demand, and the services
//! whose file is gone (retired once they settle).

use std::{collections::BTreeSet, sync::Arc};

use tracing::{error, info};

use super::{RequestError, Supervisor, Update};
use crate::{
    config::{self, ServiceSpec},
    tracker::{Command, Restart, ServiceId, State},
};

impl Supervisor {
    /// Loads the configuration directory and starts what starts by itself.
    pub fn load(&mut self) {
        self.read_config(true);
    }

    /// Reads the configuration directory. New services are added (and
    /// started if they start by themselves; at start-up, all such are);
    /// changed ones take effect at their next start; a file that became
    /// unreadable or wrong keeps its service as it was. A service whose file
    /// is gone is removed once it is stopped, and never restarted meanwhile.
    pub(super) fn read_config(&mut self, initial: bool) {
        let loaded = config::load_dir(&self.config_dir);
        for problem in &loaded.errors {
            error!("{problem}");
        }
        // Names whose file is there but wrong: their services stay.
        let kept: BTreeSet<String> = loaded
            .errors
            .iter()
            .filter_map(|e| {
                e.path
                    .file_stem()?
                    .to_str()
                    .map(|n| n.trim_end_matches('@').to_owned())
            })
            .collect();
        self.templates = loaded.templates;
        let mut present = BTreeSet::new();
        let mut autostart = Vec::new();
        for spec in loaded.services {
            let starts = spec.autostart && (initial || !self.names.contains_key(&spec.name));
            present.insert(spec.name.clone());
            let id = self.add_or_update(spec);
            self.retiring.remove(&id);
            if starts {
                autostart.push(id);
            }
        }
        let gone: Vec<(String, ServiceId)> = self
            .names
            .iter()
            .filter(|(name, _)| !present.contains(*name))
            .filter(|(name, _)| {
                let (base, instance) = config::split_name(name);
                let on_demand = instance.is_some() && self.templates.contains_key(base);
                !on_demand && !kept.contains(base)
            })
            .map(|(name, &id)| (name.clone(), id))
            .collect();
        for (name, id) in gone {
            info!(service = %name, "its service file is gone: removed once stopped");
            let mut policy = self.specs[id.index()].policy;
            policy.restart = Restart::No;
            self.tracker.set_policy(id, policy);
            self.retiring.insert(id);
        }
        self.remove_retired();
        info!(
            services = self.names.len(),
            templates = self.templates.len(),
            errors = loaded.errors.len(),
            "loaded {}",
            self.config_dir.display()
        );
        for id in autostart {
            self.command(id, Command::Start).ok();
        }
    }

    /// Forgets the retiring services that have settled.
    pub(super) fn remove_retired(&mut self) {
        let settled: Vec<ServiceId> = self
            .retiring
            .iter()
            .copied()
            .filter(|&id| {
                self.tracker.status(id).is_some_and(|s| {
                    matches!(s.state, State::Stopped | State::Failed) && s.main_pid.is_none()
                }) && self.tracker.members(id).is_empty()
            })
            .collect();
        for id in settled {
            self.retiring.remove(&id);
            let name = self.specs[id.index()].name.clone();
            self.names.remove(&name);
            self.outputs.forget(id);
            info!(service = %name, "removed");
            self.publish(Update::ServiceRemoved { service: id, name });
        }
    }

    pub(super) fn add_or_update(&mut self, spec: ServiceSpec) -> ServiceId {
        let policy = spec.policy;
        match self.names.get(&spec.name) {
            Some(&id) => {
                self.tracker.set_policy(id, policy);
                self.specs[id.index()] = Arc::new(spec);
                id
            }
            None => {
                let now = self.now();
                let id = self.tracker.add_service(policy, now);
                self.names.insert(spec.name.clone(), id);
                let spec = Arc::new(spec);
                self.specs.push(Arc::clone(&spec));
                if let Some(status) = self.tracker.status(id) {
                    self.publish(Update::ServiceAdded {
                        service: id,
                        spec,
                        status,
                    });
                }
                id
            }
        }
    }

    /// Re-reads the configuration directory: new services are added (and
    /// started if they start by themselves), changed ones take effect at
    /// their next start. Removed files leave their services in place until
    /// they are stopped.
    pub(super) fn reload(&mut self) {
        info!("reloading {}", self.config_dir.display());
        self.read_config(false);
    }

    /// Finds a service by name; with `instantiate`, creates a template's
    /// instance on demand.
    pub(super) fn resolve(
        &mut self,
        name: &str,
        instantiate: bool,
    ) -> Result<ServiceId, RequestError> {
        config::validate_service_name(name).map_err(|e| RequestError::InvalidName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let (template, instance) = config::split_name(name);
        let (Some(instance), true) = (instance, instantiate) else {
            return Err(RequestError::NoSuchService(name.to_owned()));
        };
        let template = self
            .templates
            .get(template)
            .ok_or_else(|| RequestError::NoSuchService(name.to_owned()))?;
        let spec = template
            .instantiate(instance)
            .map_err(|e| RequestError::BadInstance {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(self.add_or_update(spec))
    }
}
