//! Reading services' properties: one `GetAll` for one service, one
//! `GetManagedObjects` for all of them.
//!
//! No proxy is built for reading: a zbus proxy that caches properties
//! subscribes to `PropertiesChanged` and reads them in the background,
//! which costs round trips a one-shot command does not need. One call
//! returns everything, and [`ServiceStatus`] holds it with the D-Bus
//! property names, which are also its JSON keys.

use std::collections::HashMap;

use adoptd_dbus::{
    LoadState, MANAGER_PATH, MainPidSource, SERVICE_INTERFACE, ServiceResult, State, service_path,
};
use serde::Serialize;
use zbus::{DeserializeDict, OwnedObjectPath, OwnedVariant, Type};

use crate::{
    bus::Bus,
    error::{Failure, no_such_service},
};

/// Every property of one service, keyed (in JSON too) by its D-Bus name.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeDict, Type, Serialize)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    pub name: String,
    pub template: String,
    pub instance: String,
    pub description: String,
    pub state: State,
    #[zbus(rename = "MainPID")]
    #[serde(rename = "MainPID")]
    pub main_pid: u32,
    #[zbus(rename = "PreviousPID")]
    #[serde(rename = "PreviousPID")]
    pub previous_pid: u32,
    #[zbus(rename = "MainPIDSource")]
    #[serde(rename = "MainPIDSource")]
    pub main_pid_source: MainPidSource,
    #[zbus(rename = "PIDs")]
    #[serde(rename = "PIDs")]
    pub pids: Vec<u32>,
    pub handoffs: u32,
    pub restarts: u32,
    pub state_change_timestamp: u64,
    /// When adoptd re-attached the current run after a crash; absent from
    /// an adoptd older than the property, which re-attaches nothing, and
    /// written 0 then, as adoptd says of a run it started.
    #[serde(serialize_with = "zero_when_absent")]
    pub reattached_timestamp: Option<u64>,
    pub exit_code: i32,
    pub exit_signal: i32,
    pub result: ServiceResult,
    pub command: Vec<String>,
    pub chroot: String,
    pub user: String,
    pub expect: String,
    pub restart: String,
    pub load_state: LoadState,
    pub load_error: String,
    pub fragment_path: String,
    pub need_daemon_reload: bool,
    pub exec_error: String,
    pub status_text: String,
}

/// The properties of service `name`: one `GetAll` on its object path.
pub async fn one(bus: &Bus, name: &str) -> Result<ServiceStatus, Failure> {
    let reply = bus
        .connection
        .call_method(
            Some(adoptd_dbus::BUS_NAME),
            service_path(name).as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(SERVICE_INTERFACE),
        )
        .await
        .map_err(|e| Failure::from_zbus(Some(name), &bus.name, &e))?;
    reply
        .body()
        .deserialize::<ServiceStatus>()
        .map_err(|e| unreadable(Some(name), &e))
}

/// Every service's properties, sorted by name: one `GetManagedObjects`.
pub async fn all(bus: &Bus) -> Result<Vec<ServiceStatus>, Failure> {
    let reply = bus
        .connection
        .call_method(
            Some(adoptd_dbus::BUS_NAME),
            MANAGER_PATH,
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        )
        .await
        .map_err(|e| Failure::from_zbus(None, &bus.name, &e))?;
    let objects: HashMap<OwnedObjectPath, HashMap<String, Properties>> = reply
        .body()
        .deserialize()
        .map_err(|e| unreadable(None, &e))?;
    let mut services = Vec::with_capacity(objects.len());
    for (path, mut interfaces) in objects {
        let Some(properties) = interfaces.remove(SERVICE_INTERFACE) else {
            continue;
        };
        let name = adoptd_dbus::service_name_from_path(&path.as_ref());
        let status = properties
            .into_status()
            .map_err(|e| unreadable(name.as_deref(), &e))?;
        services.push(status);
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(services)
}

/// Every service's row of `ListServices` (name, state, pids).
pub async fn rows(bus: &Bus) -> Result<Vec<adoptd_dbus::ServiceRow>, Failure> {
    let manager = adoptd_dbus::ManagerProxy::builder(&bus.connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure::from_zbus(None, &bus.name, &e))?;
    manager
        .list_services()
        .await
        .map_err(|e| Failure::from_bus(None, &bus.name, &e))
}

/// The properties of the services `names` selects (names or globs), in
/// the order asked, each once. A name or glob that selects nothing is a
/// failure of its own, reported beside the services found.
pub async fn selected(bus: &Bus, names: &[String]) -> (Vec<ServiceStatus>, Vec<Failure>) {
    let mut failures = Vec::new();
    if names.iter().all(|name| !crate::glob::is_glob(name)) {
        // Plain names: one GetAll each, without listing everything.
        let mut services = Vec::new();
        for name in dedup(names) {
            match one(bus, name).await {
                Ok(status) => services.push(status),
                Err(failure) => failures.push(failure),
            }
        }
        return (services, failures);
    }
    let every = match all(bus).await {
        Ok(every) => every,
        Err(failure) => return (Vec::new(), vec![failure]),
    };
    let mut chosen = vec![false; every.len()];
    let mut order = Vec::new();
    for pattern in dedup(names) {
        let mut matched = false;
        for (index, status) in every.iter().enumerate() {
            if crate::glob::matches(pattern, &status.name) {
                matched = true;
                if !chosen[index] {
                    chosen[index] = true;
                    order.push(index);
                }
            }
        }
        if !matched {
            failures.push(if crate::glob::is_glob(pattern) {
                Failure::new(
                    crate::error::Exit::NoSuchService,
                    format!("no service matches {pattern:?}"),
                )
            } else {
                no_such_service(pattern)
            });
        }
    }
    let mut every: Vec<Option<ServiceStatus>> = every.into_iter().map(Some).collect();
    let services = order
        .into_iter()
        .filter_map(|index| every[index].take())
        .collect();
    (services, failures)
}

/// One interface's properties in `GetManagedObjects`, kept as values:
/// the standard interfaces come with empty dictionaries, which are no
/// [`ServiceStatus`].
#[derive(Debug, serde::Deserialize, Type)]
#[serde(transparent)]
struct Properties(HashMap<String, OwnedVariant>);

impl Properties {
    fn into_status(self) -> Result<ServiceStatus, zbus::Error> {
        // Re-encoded and decoded once: the derive reads dictionaries, not
        // values.
        let context = zbus::wire::serialized::Context::new(zbus::wire::LE, 0);
        let encoded = zbus::wire::to_bytes(context, &self.0)?;
        let (status, _) = encoded.deserialize::<ServiceStatus>()?;
        Ok(status)
    }
}

fn zero_when_absent<S: serde::Serializer>(
    value: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(value.unwrap_or(0))
}

/// `names` without repeats, in their first order.
pub fn dedup(names: &[String]) -> impl Iterator<Item = &String> {
    names
        .iter()
        .enumerate()
        .filter(|(index, name)| !names[..*index].contains(name))
        .map(|(_, name)| name)
}

fn unreadable(name: Option<&str>, error: &dyn std::fmt::Display) -> Failure {
    let subject = name.map(|name| format!("{name}: ")).unwrap_or_default();
    Failure::failed(format!(
        "{subject}cannot read adoptd's answer (is adoptctl as new as adoptd?): {error}"
    ))
}
