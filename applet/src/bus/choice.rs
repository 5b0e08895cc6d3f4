//! Which bus adoptd is on: the same rules as adoptctl's.
//!
//! First that applies: `--address`, `--system`, `--session`;
//! `$ADOPTD_BUS_ADDRESS`; the system bus if `org.adoptd1` is there; the
//! private bus socket of `adoptd --private-bus` if it exists; else the
//! system bus, where the applet then waits for adoptd to appear.

use std::path::PathBuf;

use adoptd_dbus::BUS_NAME;
use zbus::{Connection, connection::Builder};

/// The environment variable `adoptd --private-bus` prints.
pub const ADDRESS_VARIABLE: &str = "ADOPTD_BUS_ADDRESS";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Address(String),
    System,
    Session,
    /// The environment, then whichever bus adoptd is on.
    Auto,
}

impl Choice {
    /// Whether the choice may land elsewhere when tried again: only the
    /// automatic one, when adoptd is not on the bus it found.
    pub fn may_move(&self) -> bool {
        *self == Choice::Auto && std::env::var_os(ADDRESS_VARIABLE).is_none_or(|a| a.is_empty())
    }
}

/// A connection, and the words that name its bus.
pub struct Bus {
    pub connection: Connection,
    /// "system bus", "session bus" or "bus at unix:path=…".
    pub name: String,
}

/// Connects to the bus `choice` and the environment lead to; the error is
/// a sentence for the window.
pub async fn connect(choice: &Choice) -> Result<Bus, String> {
    match choice {
        Choice::Address(address) => at_address(address).await,
        Choice::System => open(Builder::system(), "system bus".to_owned()).await,
        Choice::Session => open(Builder::session(), "session bus".to_owned()).await,
        Choice::Auto => automatic().await,
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
                at_address(&adoptd_dbus::private_bus_address(&socket)).await
            }
        }
        (Err(_), Some(socket)) => at_address(&adoptd_dbus::private_bus_address(&socket)).await,
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
    let builder = match builder.build().await {
        Ok(connection) => return Ok(Bus { connection, name }),
        Err(e) => e,
    };
    Err(format!("cannot connect to the {name}: {builder}"))
}

/// Whether `org.adoptd1` has an owner on this bus.
async fn has_adoptd(connection: &Connection) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(connection).await else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from(BUS_NAME) else {
        return false;
    };
    dbus.name_has_owner(name).await.unwrap_or(false)
}

/// Where `adoptd --private-bus` of this user listens.
fn private_socket() -> Option<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    adoptd_dbus::private_bus_path(uid, runtime_dir.as_deref())
}
