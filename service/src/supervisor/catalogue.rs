//! The supervisor's catalogue: the service files as loaded, the names they
//! define, the templates for instances made on demand, and the services
//! whose file is gone (retired once they settle).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use adoptd_dbus::LoadState;
use tracing::{error, info};

use super::{Load, RequestError, Supervisor, Update};
use crate::{
    config::{self, ConfigError, ConfigErrorKind, ServiceSpec},
    tracker::{Restart, ServiceId, State},
};

impl Supervisor {
    /// Loads the configuration directory and starts what starts by itself.
    pub fn load(&mut self) {
        self.read_config(true);
    }

    /// Reads the configuration directory. New services are added (and
    /// started if they start by themselves; at start-up, all such are);
    /// changed ones take effect at their next start. A file that became
    /// wrong keeps its service as it was, `bad-setting` with the refusal;
    /// a refused file of a service never loaded gives a stand-in that
    /// shows the refusal and never starts. A service whose file is gone is
    /// `not-found`, removed once it is stopped, and never restarted
    /// meanwhile. Returns the refusals, one line each.
    pub(super) fn read_config(&mut self, initial: bool) -> Vec<String> {
        let loaded = config::load_dir(&self.config_dir);
        for problem in &loaded.errors {
            error!("{problem}");
        }
        let refusals: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        let refused = Refused::sort(&loaded.errors);
        // A refused template keeps serving its instances from the version
        // that loaded last.
        let mut templates = loaded.templates;
        for name in refused.templates.keys() {
            if let Some(kept) = self.templates.remove(name) {
                templates.insert(name.clone(), kept);
            }
        }
        self.templates = templates;
        let mut present = BTreeSet::new();
        let mut autostart = Vec::new();
        for spec in loaded.services {
            let starts = spec.autostart
                && (initial || !self.names.contains_key(&spec.name) || self.is_stub(&spec.name));
            present.insert(spec.name.clone());
            let load = Load::loaded(&spec);
            let id = self.add_or_update(spec, load);
            self.retiring.remove(&id);
            if starts {
                autostart.push(id);
            }
        }
        // Instances started on demand follow their template's new version.
        let on_demand: Vec<(String, ServiceId)> = self
            .names
            .iter()
            .filter(|(name, _)| !present.contains(*name))
            .filter_map(|(name, &id)| {
                let (template, instance) = config::split_name(name);
                (instance.is_some() && self.templates.contains_key(template))
                    .then(|| (name.clone(), id))
            })
            .collect();
        for (name, id) in on_demand {
            let (template, instance) = config::split_name(&name);
            let refusal = refused.templates.get(template);
            let fresh = self
                .templates
                .get(template)
                .zip(instance)
                .and_then(|(template, instance)| template.instantiate(instance).ok());
            match (refusal, fresh) {
                (None, Some(spec)) => {
                    let load = Load::loaded(&spec);
                    self.add_or_update(spec, load);
                }
                _ => {
                    let digest = self.loads[id.index()].digest;
                    self.set_load(id, bad_setting(refusal, digest));
                }
            }
            present.insert(name);
        }
        for (name, error) in &refused.services {
            present.insert(name.clone());
            let load = bad_setting(Some(error), error.digest);
            match self.names.get(name) {
                Some(&id) => self.set_load(id, load),
                None => {
                    let spec = ServiceSpec::refused(name, &error.path);
                    let id = self.add_or_update(spec, load);
                    self.stubs.insert(id);
                }
            }
        }
        for (template, error) in &refused.templates {
            let instances: Vec<ServiceId> = self
                .names
                .iter()
                .filter(|(name, _)| config::split_name(name).0 == template.as_str())
                .map(|(_, &id)| id)
                .collect();
            for id in instances {
                self.set_load(id, bad_setting(Some(error), error.digest));
                present.insert(self.specs[id.index()].name.clone());
            }
        }
        let gone: Vec<(String, ServiceId)> = self
            .names
            .iter()
            .filter(|(name, _)| !present.contains(*name))
            .map(|(name, &id)| (name.clone(), id))
            .collect();
        for (name, id) in gone {
            if !self.retiring.contains(&id) {
                info!(service = %name, "its service file is gone: removed once stopped");
            }
            let mut policy = self.specs[id.index()].policy;
            policy.restart = Restart::No;
            self.tracker.set_policy(id, policy);
            self.retiring.insert(id);
            // The digest of what was loaded stays: the file on disk (none)
            // differs from it.
            let digest = self.loads[id.index()].digest;
            self.set_load(
                id,
                Load {
                    state: LoadState::NotFound,
                    error: None,
                    digest,
                },
            );
        }
        self.remove_retired();
        info!(
            services = self.names.len(),
            templates = self.templates.len(),
            errors = loaded.errors.len(),
            "loaded {}",
            self.config_dir.display()
        );
        if initial {
            // Before anything starts: a re-attached service is running,
            // and its autostart starts nothing.
            self.reattach_found();
            autostart.retain(|&id| !self.held_by_live_writer(id));
        }
        let autostart: Vec<ServiceId> = autostart
            .into_iter()
            .filter(|&id| match self.check_not_held_back(id) {
                Ok(()) => true,
                Err(refusal) => {
                    error!("{refusal}");
                    false
                }
            })
            .collect();
        self.start_each(&autostart);
        if initial {
            self.restart_ended_while_away();
        }
        refusals
    }

    fn is_stub(&self, name: &str) -> bool {
        self.names
            .get(name)
            .is_some_and(|id| self.stubs.contains(id))
    }

    /// Records whether a service's file loaded, publishing a change.
    fn set_load(&mut self, id: ServiceId, load: Load) {
        if self.loads[id.index()] != load {
            self.loads[id.index()] = load.clone();
            self.publish(Update::Configured {
                service: id,
                spec: Arc::clone(&self.specs[id.index()]),
                load,
            });
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

    /// Adds a service, or gives a known one its new spec and load state
    /// (from its next start on), publishing what changed.
    pub(super) fn add_or_update(&mut self, spec: ServiceSpec, load: Load) -> ServiceId {
        let policy = spec.policy;
        match self.names.get(&spec.name) {
            Some(&id) => {
                self.tracker.set_policy(id, policy);
                self.stubs.remove(&id);
                let index = id.index();
                if *self.specs[index] != spec || self.loads[index] != load {
                    self.specs[index] = Arc::new(spec);
                    self.loads[index] = load.clone();
                    self.publish(Update::Configured {
                        service: id,
                        spec: Arc::clone(&self.specs[index]),
                        load,
                    });
                }
                id
            }
            None => {
                let now = self.now();
                let id = self.tracker.add_service(policy, now);
                self.names.insert(spec.name.clone(), id);
                let spec = Arc::new(spec);
                self.specs.push(Arc::clone(&spec));
                self.loads.push(load.clone());
                if let Some(status) = self.tracker.status(id) {
                    self.publish(Update::ServiceAdded {
                        service: id,
                        spec,
                        status,
                        load,
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
    pub(super) fn reload(&mut self) -> Vec<String> {
        info!("reloading {}", self.config_dir.display());
        self.read_config(false)
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
        let load = Load::loaded(&spec);
        Ok(self.add_or_update(spec, load))
    }
}

/// The refusals of one load, by the service objects they concern.
#[derive(Default)]
struct Refused<'a> {
    /// Plain services, and single instances of a template that loaded.
    services: BTreeMap<String, &'a ConfigError>,
    /// Templates whose file was refused, for their running instances.
    templates: BTreeMap<String, &'a ConfigError>,
}

impl<'a> Refused<'a> {
    /// Sorts refusals by the service they concern; those that concern no
    /// nameable service (a bad file name, a bad or repeated instance name,
    /// an unreadable directory) are only logged and reported.
    fn sort(errors: &'a [ConfigError]) -> Self {
        let mut refused = Refused::default();
        for error in errors {
            let Some(stem) = error
                .path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".toml"))
            else {
                continue;
            };
            let (name, whole_template) = match (stem.strip_suffix('@'), &error.kind) {
                (Some(template), ConfigErrorKind::Instance { instance, .. }) => {
                    (format!("{template}@{instance}"), false)
                }
                (
                    Some(_),
                    ConfigErrorKind::BadInstanceName { .. }
                    | ConfigErrorKind::DuplicateInstance { .. },
                ) => continue,
                (Some(template), _) => (template.to_owned(), true),
                (None, _) => (stem.to_owned(), false),
            };
            if config::validate_service_name(&name).is_err() {
                continue;
            }
            let table = if whole_template {
                &mut refused.templates
            } else {
                &mut refused.services
            };
            table.entry(name).or_insert(error);
        }
        refused
    }
}

/// A file refused as it is now: `error` is the refusal where one is known,
/// `digest` the file's as it was read.
fn bad_setting(error: Option<&&ConfigError>, digest: Option<u64>) -> Load {
    Load {
        state: LoadState::BadSetting,
        error: Some(error.map_or_else(
            || "its template, as it is now, cannot make this instance".to_owned(),
            |error| error.to_string(),
        )),
        digest,
    }
}
