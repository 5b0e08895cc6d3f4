//! Which bus adoptd is on, and the connection to it: the command line
//! mapped to the rule every client follows (`adoptd_dbus::choice`).

pub use adoptd_dbus::Bus;
use adoptd_dbus::{BUS_NAME, BusChoice};

use crate::{cli::Cli, error::Failure};

/// Connects to the bus the command line and the environment choose.
pub async fn connect(cli: &Cli) -> Result<Bus, Failure> {
    let choice = match &cli.address {
        Some(address) => BusChoice::Address(address.clone()),
        None if cli.system => BusChoice::System,
        None if cli.session => BusChoice::Session,
        None => BusChoice::Auto,
    };
    adoptd_dbus::choice::connect(&choice)
        .await
        .map_err(Failure::failed)
}

/// Matches adoptd leaving (or joining) the bus, for commands that wait on
/// its signals and must not wait for ever once it is gone.
pub fn owner_changes() -> zbus::Result<zbus::MatchRule<'static>> {
    zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, BUS_NAME)
        .build()
}
