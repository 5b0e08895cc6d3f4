//! The errors adoptd replies with, by D-Bus name.
//!
//! The daemon returns [`Error`] from its methods; clients get the same type
//! back from the proxies, because the derive maps a reply's error name to the
//! variant of that name. Every message is a sentence a person can act on,
//! written by the daemon: clients print it as it is.

use zbus::DBusError;

/// The prefix of every adoptd error name.
pub const ERROR_PREFIX: &str = "org.adoptd1.Error";
/// No service of that name is loaded (nor a template it instantiates).
pub const ERROR_NO_SUCH_SERVICE: &str = "org.adoptd1.Error.NoSuchService";
/// The name is not a valid service or instance name.
pub const ERROR_INVALID_NAME: &str = "org.adoptd1.Error.InvalidName";
/// The caller is neither root nor authorized by polkit for [`POLKIT_ACTION`].
///
/// [`POLKIT_ACTION`]: crate::POLKIT_ACTION
pub const ERROR_ACCESS_DENIED: &str = "org.adoptd1.Error.AccessDenied";
/// Start of a service that is already starting or running.
pub const ERROR_ALREADY_RUNNING: &str = "org.adoptd1.Error.AlreadyRunning";
/// Stop, reload or kill of a service that has no main process.
pub const ERROR_NOT_RUNNING: &str = "org.adoptd1.Error.NotRunning";
/// The request was valid but could not be carried out.
pub const ERROR_FAILED: &str = "org.adoptd1.Error.Failed";
/// What the bus itself answers when its policy refuses a message.
pub const FDO_ERROR_ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// An error reply of adoptd. Each variant's string is the human sentence.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.adoptd1.Error")]
pub enum Error {
    /// A transport or protocol error, or an error reply with a name that is
    /// not adoptd's own (e.g. the bus's `AccessDenied`).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// See [`ERROR_NO_SUCH_SERVICE`].
    NoSuchService(String),
    /// See [`ERROR_INVALID_NAME`].
    InvalidName(String),
    /// See [`ERROR_ACCESS_DENIED`].
    AccessDenied(String),
    /// See [`ERROR_ALREADY_RUNNING`].
    AlreadyRunning(String),
    /// See [`ERROR_NOT_RUNNING`].
    NotRunning(String),
    /// See [`ERROR_FAILED`].
    Failed(String),
}

impl Error {
    /// Whether the caller lacked the right to do this, whether adoptd
    /// refused it or the bus policy did.
    pub fn is_access_denied(&self) -> bool {
        match self {
            Error::AccessDenied(_) => true,
            Error::ZBus(zbus::Error::MethodError(name, _, _)) => {
                name.as_str() == FDO_ERROR_ACCESS_DENIED
            }
            Error::ZBus(zbus::Error::FDO(error)) => {
                matches!(**error, zbus::fdo::Error::AccessDenied(_))
            }
            _ => false,
        }
    }
}

/// Shorthand for results whose error is adoptd's.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use zbus::DBusError as _;

    use super::*;

    #[test]
    fn names_are_the_contracts() {
        let cases = [
            (Error::NoSuchService(String::new()), ERROR_NO_SUCH_SERVICE),
            (Error::InvalidName(String::new()), ERROR_INVALID_NAME),
            (Error::AccessDenied(String::new()), ERROR_ACCESS_DENIED),
            (Error::AlreadyRunning(String::new()), ERROR_ALREADY_RUNNING),
            (Error::NotRunning(String::new()), ERROR_NOT_RUNNING),
            (Error::Failed(String::new()), ERROR_FAILED),
        ];
        for (error, name) in cases {
            assert_eq!(error.name().as_str(), name);
            assert!(name.starts_with(ERROR_PREFIX));
        }
    }

    #[test]
    fn a_reply_maps_back_to_its_variant() {
        let reply = zbus::Error::MethodError(
            ERROR_NO_SUCH_SERVICE.try_into().expect("valid error name"),
            Some("no service named \"nginx\"".to_owned()),
            dummy_message(),
        );
        match Error::from(reply) {
            Error::NoSuchService(text) => assert_eq!(text, "no service named \"nginx\""),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_bus_refusal_counts_as_access_denied() {
        let reply = zbus::Error::MethodError(
            FDO_ERROR_ACCESS_DENIED
                .try_into()
                .expect("valid error name"),
            None,
            dummy_message(),
        );
        assert!(Error::from(reply).is_access_denied());
        assert!(Error::AccessDenied("not root".to_owned()).is_access_denied());
        assert!(!Error::Failed("x".to_owned()).is_access_denied());
    }

    fn dummy_message() -> zbus::Message {
        zbus::Message::method_call("/", "Ping")
            .build(&())
            .expect("valid message")
    }
}
