//! `adoptctl daemon-reexec`: asks adoptd to re-execute itself, then waits
//! until the new image owns the bus name again.
//!
//! The wait follows `NameOwnerChanged` for `org.adoptd1`: the reply to
//! `Reexecute` comes before the exec, the name then goes and comes back
//! with a new owner. On adoptd's private bus the bus itself goes with the
//! exec; the client then connects again until the name is there.

use std::time::Duration;

use adoptd_dbus::{BUS_NAME, Error as BusError, ManagerProxy};
use futures_util::StreamExt as _;
use zbus::{fdo::DBusProxy, names::BusName, proxy::CacheProperties};

use crate::{
    bus::Bus,
    cli::Cli,
    error::{Exit, Failure},
};

/// How long adoptd may take to come back.
const COMING_BACK: Duration = Duration::from_secs(60);

/// Re-executes adoptd; 0 once it is back on the bus.
pub async fn run(bus: &Bus, cli: &Cli) -> Exit {
    match reexecute(bus, cli).await {
        Ok(()) => Exit::Success,
        Err(failure) => {
            crate::report(&failure);
            failure.exit
        }
    }
}

async fn reexecute(bus: &Bus, cli: &Cli) -> Result<(), Failure> {
    let zbus_failure = |e: zbus::Error| Failure::from_zbus(None, &bus.name, &e);
    let name = BusName::try_from(BUS_NAME).map_err(zbus_failure)?;
    let daemon = DBusProxy::new(&bus.connection)
        .await
        .map_err(zbus_failure)?;
    let old_owner = daemon
        .get_name_owner(name.clone())
        .await
        .map_err(|e| zbus_failure(e.into()))?;
    let mut changes = daemon
        .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
        .await
        .map_err(zbus_failure)?;
    let manager = ManagerProxy::builder(&bus.connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(zbus_failure)?;
    // On adoptd's private bus the bus goes with the exec, possibly before
    // the reply reaches this client: the connection breaks instead.
    let bus_went = match manager.reexecute().await {
        Ok(()) => false,
        Err(BusError::ZBus(zbus::Error::InputOutput(_))) => true,
        Err(error) => return Err(Failure::from_bus(None, &bus.name, &error)),
    };
    let back = async {
        if bus_went {
            return false;
        }
        while let Some(change) = changes.next().await {
            let Ok(args) = change.args() else { continue };
            if args
                .new_owner()
                .as_ref()
                .is_some_and(|owner| owner.as_str() != old_owner.as_str())
            {
                return true;
            }
        }
        // The connection went with the exec (adoptd's private bus).
        false
    };
    let came_back =
        tokio::time::timeout(COMING_BACK, async { back.await || reconnected(cli).await }).await;
    match came_back {
        Ok(true) => Ok(()),
        _ => Err(Failure::failed(format!(
            "adoptd did not come back on the bus within {} s after its re-exec",
            COMING_BACK.as_secs()
        ))),
    }
}

/// Connects again until the name is owned: for a bus that went away with
/// the exec. Retried every 50 ms, within the caller's bound.
async fn reconnected(cli: &Cli) -> bool {
    loop {
        if let Ok(bus) = crate::bus::connect(cli).await
            && let Ok(daemon) = DBusProxy::new(&bus.connection).await
            && let Ok(name) = BusName::try_from(BUS_NAME)
            && daemon.name_has_owner(name).await.unwrap_or(false)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
