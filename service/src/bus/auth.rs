//! Who may change anything: root, adoptd's own user, or whom polkit
//! allows `org.adoptd1.manage`; and who may read a service's output (which
//! may hold secrets): the same, with `org.adoptd1.read-output`.
//!
//! The caller is the message's sender as the bus saw it: its credentials
//! come from the bus (`GetConnectionCredentials`), never from arguments, and
//! polkit is asked about that same bus name (subject `system-bus-name`), so
//! a caller cannot swap processes between the question and the answer.
//! Reading anything else needs no authorization at all.

use std::collections::HashMap;

use adoptd_dbus::{Error, POLKIT_ACTION, POLKIT_READ_OUTPUT_ACTION};
use tracing::debug;
use zbus::{
    Connection, Variant,
    fdo::ConnectionCredentials,
    message::{Flags, Header},
};

const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const POLKIT_INTERFACE: &str = "org.freedesktop.PolicyKit1.Authority";
/// CheckAuthorization's flag that lets polkit ask the user for a password.
const ALLOW_USER_INTERACTION: u32 = 1;

/// Allows the call in `header` to change things, or says why not.
pub(super) async fn authorize(
    connection: &Connection,
    header: &Header<'_>,
    owner_uid: u32,
) -> Result<(), Error> {
    authorize_action(connection, header, owner_uid, &MANAGE).await
}

/// Allows the call in `header` to read a service's output, or says why not.
pub(super) async fn authorize_reading_output(
    connection: &Connection,
    header: &Header<'_>,
    owner_uid: u32,
) -> Result<(), Error> {
    authorize_action(connection, header, owner_uid, &READ_OUTPUT).await
}

/// A polkit action and what it lets a caller do, for refusals.
struct Action {
    id: &'static str,
    /// "control adoptd's services"
    doing: &'static str,
}

const MANAGE: Action = Action {
    id: POLKIT_ACTION,
    doing: "control adoptd's services",
};

const READ_OUTPUT: Action = Action {
    id: POLKIT_READ_OUTPUT_ACTION,
    doing: "read the output of adoptd's services",
};

async fn authorize_action(
    connection: &Connection,
    header: &Header<'_>,
    owner_uid: u32,
    action: &Action,
) -> Result<(), Error> {
    let Some(sender) = header.sender() else {
        return Err(denied("the caller has no bus name to check"));
    };
    let credentials: ConnectionCredentials = connection
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionCredentials",
            &(sender.as_str()),
        )
        .await?
        .body()
        .deserialize()?;
    let Some(uid) = credentials.unix_user_id() else {
        return Err(denied("the bus does not say who the caller is"));
    };
    // Root may do anything; adoptd's own user may signal its own processes
    // anyway (that is what a session or private bus adoptd runs as).
    if uid == 0 || uid == owner_uid {
        return Ok(());
    }
    let interactive = header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH);
    let Action { id, doing } = action;
    match ask_polkit(connection, sender.as_str(), id, interactive).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::AccessDenied(format!(
            "polkit does not allow uid {uid} to {id}: only root and users allowed that action may {doing}."
        ))),
        Err(e) => {
            debug!("polkit cannot be asked: {e}");
            Err(Error::AccessDenied(format!(
                "Only root may {doing} (uid {uid} asked): run the command as root, or install polkit and allow {id}."
            )))
        }
    }
}

fn denied(why: &str) -> Error {
    Error::AccessDenied(format!("Access denied: {why}."))
}

/// polkit's answer for `sender` and `action`, or an error if polkit is not running.
async fn ask_polkit(
    connection: &Connection,
    sender: &str,
    action: &str,
    interactive: bool,
) -> zbus::Result<bool> {
    // Without polkit on the bus, do not let the bus try to start it.
    let running: bool = connection
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(POLKIT_NAME),
        )
        .await?
        .body()
        .deserialize()?;
    if !running {
        return Err(zbus::Error::Failure("polkit is not running".to_owned()));
    }
    let subject = (
        "system-bus-name",
        HashMap::from([("name", Variant::from(sender))]),
    );
    let details: HashMap<&str, &str> = HashMap::new();
    let flags = if interactive {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    let reply = connection
        .call_method(
            Some(POLKIT_NAME),
            POLKIT_PATH,
            Some(POLKIT_INTERFACE),
            "CheckAuthorization",
            &(subject, action, details, flags, ""),
        )
        .await?;
    let (authorized, _challenge, _details): (bool, bool, HashMap<String, String>) =
        reply.body().deserialize()?;
    Ok(authorized)
}
