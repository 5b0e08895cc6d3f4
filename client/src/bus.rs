//! Which bus adoptd is on, and the connection to it.
//!
//! The choice, first that applies: `--address`, `--system`, `--session`;
//! `$ADOPTD_BUS_ADDRESS`; the system bus if `org.adoptd1` is there; the
//! private bus socket of `adoptd --private-bus` if it exists; else the
//! system bus (whose error then says adoptd is not running there).

use std::path::PathBuf;

use adoptd_dbus::BUS_NAME;
use zbus::{Connection, connection::Builder};

use crate::{cli::Cli, error::Failure};

/// The environment variable `adoptd --private-bus` prints and adoptctl
/// reads.
pub const ADDRESS_VARIABLE: &str = "ADOPTD_BUS_ADDRESS";

/// A connection, and the words that name its bus in messages.
pub struct Bus {
    pub connection: Connection,
    /// "system bus", "session bus" or "bus at unix:path=…".
    pub name: String,
}

/// Connects to the bus the command line and the environment choose.
pub async fn connect(cli: &Cli) -> Result<Bus, Failure> {
    if let Some(address) = &cli.address {
        return at_address(address).await;
    }
    if cli.system {
        return open(Builder::system(), "system bus".to_owned()).await;
    }
    if cli.session {
        return open(Builder::session(), "session bus".to_owned()).await;
    }
    if let Some(address) = std::env::var(ADDRESS_VARIABLE)
        .ok()
        .filter(|a| !a.is_empty())
    {
        return at_address(&address).await;
    }
    let private = private_socket().filter(|socket| socket.exists());
    let system = open(Builder::system(), "system bus".to_owned()).await;
    match (system, private) {
        (Ok(system), None) => Ok(system),
        (Ok(system), Some(socket)) => {
            if has_adoptd(&system.connection).await {
                Ok(system)
            } else {
                at_address(&adoptd_dbus::private_bus_address(&socket)).await
            }
        }
        (Err(_), Some(socket)) => at_address(&adoptd_dbus::private_bus_address(&socket)).await,
        (Err(system_error), None) => Err(Failure::failed(format!(
            "{system_error}, and there is no private bus of adoptd{}",
            private_socket()
                .map(|socket| format!(" at {}", socket.display()))
                .unwrap_or_default()
        ))),
    }
}

async fn at_address(address: &str) -> Result<Bus, Failure> {
    open(Builder::address(address), format!("bus at {address}")).await
}

async fn open(builder: Builder<'_>, name: String) -> Result<Bus, Failure> {
    match builder.build().await {
        Ok(connection) => Ok(Bus { connection, name }),
        Err(e) => Err(Failure::failed(format!(
            "cannot connect to the {name}: {e}"
        ))),
    }
}

/// Whether `org.adoptd1` has an owner on this bus.
async fn has_adoptd(connection: &Connection) -> bool {
    let reply = connection
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(BUS_NAME),
        )
        .await;
    reply
        .ok()
        .and_then(|reply| reply.body().deserialize::<bool>().ok())
        .unwrap_or(false)
}

/// Where `adoptd --private-bus` of this user listens.
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

fn private_socket() -> Option<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    adoptd_dbus::private_bus_socket(uid)
}
