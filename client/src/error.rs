//! What went wrong, as a sentence for stderr and an exit status for
//! scripts.
//!
//! Exit statuses follow LSB and systemctl: 0 success, 1 failure, 2 usage,
//! 3 a named service is not running, 4 no such service. When several
//! services fail differently, the highest status wins, so "no such
//! service" is never hidden behind "not running".

use std::fmt;

use adoptd_dbus::{Error as BusError, POLKIT_ACTION};

/// The exit status of adoptctl, in increasing precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: done; for `status`, every named service runs.
    Success = 0,
    /// 1: something failed.
    Failure = 1,
    /// 2: the command line (or a name on it) is wrong.
    Usage = 2,
    /// 3: a named service is not running.
    NotRunning = 3,
    /// 4: no such service.
    NoSuchService = 4,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failure to report: one line on stderr and an exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// A generic failure (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Failure::new(Exit::Failure, message)
    }

    /// The failure of a call about service `name` (or about adoptd itself,
    /// for `None`) on the bus described by `bus`.
    pub fn from_bus(name: Option<&str>, bus: &str, error: &BusError) -> Self {
        let about = |sentence: &str| match name {
            // adoptd's sentences usually name the service already.
            Some(name) if !sentence.contains(name) => format!("{name}: {sentence}"),
            _ => sentence.to_owned(),
        };
        if error.is_access_denied() {
            let subject = name.unwrap_or("adoptd");
            return Failure::failed(format!(
                "{subject}: permission denied; run adoptctl as root (or allow {POLKIT_ACTION} in polkit)"
            ));
        }
        match error {
            BusError::NoSuchService(sentence) => Failure::new(Exit::NoSuchService, about(sentence)),
            BusError::InvalidName(sentence) => Failure::new(Exit::Usage, about(sentence)),
            BusError::NotRunning(sentence) => Failure::new(Exit::NotRunning, about(sentence)),
            BusError::AlreadyRunning(sentence) | BusError::Failed(sentence) => {
                Failure::failed(about(sentence))
            }
            BusError::AccessDenied(sentence) => Failure::failed(about(sentence)),
            BusError::ZBus(error) => Failure::from_zbus(name, bus, error),
        }
    }

    /// The failure of a transport or standard D-Bus error.
    pub fn from_zbus(name: Option<&str>, bus: &str, error: &zbus::Error) -> Self {
        match (standard_error_name(error), name) {
            (
                Some(
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner",
                ),
                _,
            ) => Failure::failed(format!("adoptd is not running on the {bus}")),
            // The object of a service that is not loaded is not there.
            (
                Some(
                    "org.freedesktop.DBus.Error.UnknownObject"
                    | "org.freedesktop.DBus.Error.UnknownInterface"
                    | "org.freedesktop.DBus.Error.UnknownMethod",
                ),
                Some(name),
            ) => no_such_service(name),
            (Some("org.freedesktop.DBus.Error.AccessDenied"), _) => Failure::failed(format!(
                "{}: permission denied; run adoptctl as root (or allow {POLKIT_ACTION} in polkit)",
                name.unwrap_or("adoptd")
            )),
            (_, Some(name)) => Failure::failed(format!("{name}: {}", describe_zbus(error))),
            (_, None) => Failure::failed(describe_zbus(error)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// "no service is named …" (exit 4), as adoptd itself says it.
pub fn no_such_service(name: &str) -> Failure {
    Failure::new(Exit::NoSuchService, format!("no service is named {name:?}"))
}

/// The D-Bus name of a standard error reply, if `error` is one.
fn standard_error_name(error: &zbus::Error) -> Option<&str> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        zbus::Error::FDO(error) => Some(match **error {
            zbus::fdo::Error::ServiceUnknown(_) => "org.freedesktop.DBus.Error.ServiceUnknown",
            zbus::fdo::Error::NameHasNoOwner(_) => "org.freedesktop.DBus.Error.NameHasNoOwner",
            zbus::fdo::Error::UnknownObject(_) => "org.freedesktop.DBus.Error.UnknownObject",
            zbus::fdo::Error::UnknownInterface(_) => "org.freedesktop.DBus.Error.UnknownInterface",
            zbus::fdo::Error::UnknownMethod(_) => "org.freedesktop.DBus.Error.UnknownMethod",
            zbus::fdo::Error::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            _ => return None,
        }),
        _ => None,
    }
}

/// A zbus error as a sentence: the message of an error reply, else zbus's
/// own words.
fn describe_zbus(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, Some(text), _) => format!("{text} ({name})"),
        zbus::Error::FDO(error) => error.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(name: &str, text: &str) -> zbus::Error {
        zbus::Error::MethodError(
            name.try_into().expect("valid error name"),
            Some(text.to_owned()),
            zbus::Message::method_call("/", "Ping")
                .build(&())
                .expect("valid message"),
        )
    }

    #[test]
    fn no_such_service_exits_4_with_adoptds_sentence() {
        let error = BusError::NoSuchService("no service is named \"web\"".to_owned());
        let failure = Failure::from_bus(Some("web"), "system bus", &error);
        assert_eq!(failure.exit, Exit::NoSuchService);
        assert_eq!(failure.message, "no service is named \"web\"");
    }

    #[test]
    fn a_sentence_without_the_name_gets_it_in_front() {
        let error = BusError::Failed("adoptd is shutting down.".to_owned());
        let failure = Failure::from_bus(Some("web"), "system bus", &error);
        assert_eq!(failure.message, "web: adoptd is shutting down.");
    }

    #[test]
    fn access_denied_says_to_run_as_root() {
        for error in [
            BusError::AccessDenied("Only root may control adoptd's services.".to_owned()),
            BusError::from(reply("org.freedesktop.DBus.Error.AccessDenied", "refused")),
        ] {
            let failure = Failure::from_bus(Some("web"), "system bus", &error);
            assert_eq!(failure.exit, Exit::Failure);
            assert_eq!(
                failure.message,
                "web: permission denied; run adoptctl as root (or allow org.adoptd1.manage in polkit)"
            );
        }
    }

    #[test]
    fn not_running_exits_3() {
        let error = BusError::NotRunning("web: the service is not running".to_owned());
        let failure = Failure::from_bus(Some("web"), "system bus", &error);
        assert_eq!(failure.exit, Exit::NotRunning);
        assert_eq!(failure.message, "web: the service is not running");
    }

    #[test]
    fn a_missing_object_is_no_such_service() {
        let error = reply("org.freedesktop.DBus.Error.UnknownObject", "Unknown object");
        let failure = Failure::from_zbus(Some("web"), "system bus", &error);
        assert_eq!(failure, no_such_service("web"));
    }

    #[test]
    fn a_missing_adoptd_is_named_with_the_bus() {
        let error = reply(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "not activatable",
        );
        let failure = Failure::from_zbus(Some("web"), "system bus", &error);
        assert_eq!(failure.message, "adoptd is not running on the system bus");
        assert_eq!(failure.exit, Exit::Failure);
    }

    #[test]
    fn the_worst_exit_wins() {
        assert!(Exit::NoSuchService > Exit::NotRunning);
        assert!(Exit::NotRunning > Exit::Failure);
        assert_eq!(
            [Exit::Success, Exit::NotRunning, Exit::Failure]
                .into_iter()
                .max(),
            Some(Exit::NotRunning)
        );
    }
}
