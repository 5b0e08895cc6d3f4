//! `adoptctl daemon-reload`: asks adoptd to re-read its configuration
//! directory, then says what changed: services added, removed, changed,
//! and the files refused.

use std::collections::BTreeMap;

use adoptd_dbus::{Error as BusError, LoadState, ManagerProxy};
use zbus::proxy::CacheProperties;

use crate::{
    bus::Bus,
    error::{Exit, Failure},
    properties::{self, ServiceStatus},
};

/// Reloads; 0 when every file loaded, 1 when some were refused (the
/// others are loaded all the same).
pub async fn run(bus: &Bus) -> Exit {
    let before = match by_name(bus).await {
        Ok(services) => services,
        Err(failure) => return report(failure),
    };
    let manager = match ManagerProxy::builder(&bus.connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
    {
        Ok(manager) => manager,
        Err(e) => return report(Failure::from_zbus(None, &bus.name, &e)),
    };
    let refusal = match manager.reload().await {
        Ok(()) => None,
        Err(BusError::Failed(sentence)) => Some(sentence),
        Err(error) => return report(Failure::from_bus(None, &bus.name, &error)),
    };
    let after = match by_name(bus).await {
        Ok(services) => services,
        Err(failure) => return report(failure),
    };
    let mut text = String::new();
    for line in changes(&before, &after) {
        text.push_str(&line);
        text.push('\n');
    }
    crate::render::emit(&text);
    match refusal {
        None => Exit::Success,
        Some(sentence) => report(Failure::failed(sentence)),
    }
}

/// One line per service that a reload added, removed or changed, in name
/// order.
pub fn changes(
    before: &BTreeMap<String, ServiceStatus>,
    after: &BTreeMap<String, ServiceStatus>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, now) in after {
        let line = match before.get(name) {
            None if now.load_state == LoadState::BadSetting => {
                format!("refused: {name}: {}", now.load_error)
            }
            None => format!("added: {name}"),
            Some(was)
                if was.load_state != LoadState::NotFound
                    && now.load_state == LoadState::NotFound =>
            {
                format!("removed: {name} (its file is gone; it goes once stopped)")
            }
            Some(was)
                if now.load_state == LoadState::BadSetting
                    && (was.load_state != LoadState::BadSetting
                        || was.load_error != now.load_error) =>
            {
                format!("refused: {name}: {}", now.load_error)
            }
            Some(was) if configuration(was) != configuration(now) => format!("changed: {name}"),
            Some(_) => continue,
        };
        lines.push(line);
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        lines.push(format!("removed: {name}"));
    }
    lines
}

/// What a reload may change of a service, as published.
fn configuration(status: &ServiceStatus) -> impl PartialEq + '_ {
    (
        (&status.description, &status.command, &status.chroot),
        (&status.user, &status.expect, &status.restart),
        (status.load_state, &status.load_error, &status.fragment_path),
    )
}

async fn by_name(bus: &Bus) -> Result<BTreeMap<String, ServiceStatus>, Failure> {
    Ok(properties::all(bus)
        .await?
        .into_iter()
        .map(|status| (status.name.clone(), status))
        .collect())
}

fn report(failure: Failure) -> Exit {
    crate::report(&failure);
    failure.exit
}
