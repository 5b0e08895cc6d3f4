//! Which bus adoptd is on: the rule every client follows (adoptctl, the
//! applet).
//!
//! First that applies: `--address`, `--system`, `--session`;
//! `$ADOPTD_BUS_ADDRESS`; the system bus if `org.adoptd1` is there; the
//! private bus socket of `adoptd --private-bus` if it exists (see
//! [`private_bus_socket`]); else the system bus (whose error then says
//! adoptd is not running there).

use std::path::PathBuf;

use zbus::{Connection, connection::Builder};

use crate::{BUS_NAME, private_bus_address, private_bus_socket};

/// The environment variable `adoptd --private-bus` prints and clients
/// read.
pub const ADDRESS_VARIABLE: &str = "ADOPTD_BUS_ADDRESS";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    Address(String),
    System,
    Session,
    /// The environment, then whichever bus adoptd is on.
    Auto,
}

impl BusChoice {
    /// Whether the choice may land elsewhere when tried again: only the
    /// automatic one without `$ADOPTD_BUS_ADDRESS`, when adoptd is not on
    /// the bus it found.
    pub fn may_move(&self) -> bool {
        *self == BusChoice::Auto && std::env::var_os(ADDRESS_VARIABLE).is_none_or(|a| a.is_empty())
    }
}

/// A connection, and the words that name its bus in messages.
pub struct Bus {
    pub connection: Connection,
    /// "system bus", "session bus" or "bus at unix:path=…".
    pub name: String,
}

/// Connects to the bus `choice` and the environment lead to; the error is
/// a sentence that names the bus.
pub async fn connect(choice: &BusChoice) -> Result<Bus, String> {
    match choice {
        BusChoice::Address(address) => at_address(address).await,
        BusChoice::System => open(Builder::system(), "system bus".to_owned()).await,
        BusChoice::Session => open(Builder::session(), "session bus".to_owned()).await,
        BusChoice::Auto => automatic().await,
    }
}

async fn automatic() -> Result<Bus, String> {
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
                at_address(&private_bus_address(&socket)).await
            }
        }
        (Err(_), Some(socket)) => at_address(&private_bus_address(&socket)).await,
        (Err(system_error), None) => Err(format!(
            "{system_error}, and there is no private bus of adoptd{}",
            private_socket()
                .map(|socket| format!(" at {}", socket.display()))
                .unwrap_or_default()
        )),
    }
}

async fn at_address(address: &str) -> Result<Bus, String> {
    open(Builder::address(address), format!("bus at {address}")).await
}

async fn open(builder: Builder<'_>, name: String) -> Result<Bus, String> {
    match builder.build().await {
        Ok(connection) => Ok(Bus { connection, name }),
        Err(e) => Err(format!("cannot connect to the {name}: {e}")),
    }
}

/// Whether `org.adoptd1` has an owner on this bus.
pub async fn has_adoptd(connection: &Connection) -> bool {
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
fn private_socket() -> Option<PathBuf> {
    private_bus_socket(rustix::process::geteuid().as_raw())
}
