//! adoptd's D-Bus contract, shared by the daemon and its clients.
//!
//! - [`names`]: the bus name, object paths (with systemd's label escaping),
//!   interface names, the polkit action and the private bus socket;
//! - [`state`]: the enumerated string properties (`State`, `MainPIDSource`,
//!   `Result`);
//! - [`error`]: the error replies, by D-Bus name;
//! - [`signal`]: signals by name and number, as files, properties and
//!   `Kill` spell them;
//! - [`proxy`]: client proxies for both interfaces;
//! - [`introspection`]: the checked-in `org.adoptd1.xml` and a reader that
//!   lets a test hold a live service to it.
//!
//! `org.adoptd1.xml` is the contract; everything here restates it, and this
//! crate's tests check that the restatement matches. The crate holds no
//! state and does no I/O.

pub mod choice;
pub mod error;
pub mod introspection;
pub mod names;
pub mod proxy;
pub mod signal;
pub mod state;

pub use choice::{ADDRESS_VARIABLE, Bus, BusChoice};
pub use error::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_RUNNING, ERROR_FAILED, ERROR_INVALID_NAME,
    ERROR_NO_SUCH_SERVICE, ERROR_NOT_RUNNING, ERROR_PREFIX, Error, FDO_ERROR_ACCESS_DENIED,
};
pub use introspection::INTROSPECTION_XML;
pub use names::{
    BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, POLKIT_ACTION, POLKIT_READ_OUTPUT_ACTION,
    ROOT_PRIVATE_BUS_PATH, RUNTIME_DIR_VARIABLE, SERVICE_INTERFACE, SERVICE_PATH_PREFIX,
    escape_label, private_bus_address, private_bus_path, private_bus_socket,
    service_name_from_path, service_path, unescape_label,
};
pub use proxy::{ManagerProxy, OutputLine, ServiceProxy, ServiceRow};
pub use signal::{Signal, SignalError};
pub use state::{LoadState, MainPidSource, ServiceResult, State, UnknownValue};

#[cfg(test)]
mod contract_tests {
    //! The XML, the Rust types and the proxies say the same thing.

    use std::collections::BTreeSet;

    use zbus::{OwnedObjectPath, Type};

    use super::*;

    /// How a property announces changes, as the proxies declare it.
    #[derive(Clone, Copy)]
    enum Emits {
        /// Default: `PropertiesChanged` with the value.
        Changes,
        /// Never changes.
        Const,
        /// Changes silently.
        Silently,
    }

    fn property<T: Type>(name: &str, emits: Emits) -> String {
        let suffix = match emits {
            Emits::Changes => "",
            Emits::Const => " const",
            Emits::Silently => " false",
        };
        format!("property {name} {} read{suffix}", T::SIGNATURE)
    }

    fn method(name: &str, inputs: &[(&str, String)], outputs: &[String]) -> String {
        let inputs: Vec<String> = inputs
            .iter()
            .map(|(arg, signature)| format!("{signature} {arg}"))
            .collect();
        format!(
            "method {name}({}) -> ({})",
            inputs.join(", "),
            outputs.join(", ")
        )
    }

    fn signal(name: &str, args: &[(&str, String)]) -> String {
        let args: Vec<String> = args
            .iter()
            .map(|(arg, signature)| format!("{signature} {arg}"))
            .collect();
        format!("signal {name}({})", args.join(", "))
    }

    fn sig<T: Type>() -> String {
        T::SIGNATURE.to_string()
    }

    fn manager_members() -> BTreeSet<String> {
        let name = || ("name", sig::<&str>());
        let path = sig::<OwnedObjectPath>();
        BTreeSet::from([
            property::<String>("Version", Emits::Const),
            property::<String>("Tracker", Emits::Const),
            property::<String>("Role", Emits::Const),
            property::<u64>("OrphansReaped", Emits::Changes),
            method("ListServices", &[], &[sig::<Vec<ServiceRow>>()]),
            method("GetService", &[name()], std::slice::from_ref(&path)),
            method("StartService", &[name()], std::slice::from_ref(&path)),
            method("StopService", &[name()], std::slice::from_ref(&path)),
            method("RestartService", &[name()], std::slice::from_ref(&path)),
            method("Reload", &[], &[]),
            method("Reexecute", &[], &[]),
            signal("ServiceAdded", &[name(), ("path", path.clone())]),
            signal("ServiceRemoved", &[name(), ("path", path.clone())]),
        ])
    }

    fn service_members() -> BTreeSet<String> {
        BTreeSet::from([
            property::<String>("Name", Emits::Const),
            property::<String>("Template", Emits::Const),
            property::<String>("Instance", Emits::Const),
            property::<String>("Description", Emits::Changes),
            property::<State>("State", Emits::Changes),
            property::<u32>("MainPID", Emits::Changes),
            property::<u32>("PreviousPID", Emits::Changes),
            property::<MainPidSource>("MainPIDSource", Emits::Changes),
            property::<Vec<u32>>("PIDs", Emits::Silently),
            property::<u32>("Handoffs", Emits::Changes),
            property::<u32>("Restarts", Emits::Changes),
            property::<u64>("StateChangeTimestamp", Emits::Changes),
            property::<u64>("ReattachedTimestamp", Emits::Changes),
            property::<i32>("ExitCode", Emits::Changes),
            property::<i32>("ExitSignal", Emits::Changes),
            property::<ServiceResult>("Result", Emits::Changes),
            property::<Vec<String>>("Command", Emits::Changes),
            property::<String>("Chroot", Emits::Changes),
            property::<String>("User", Emits::Changes),
            property::<String>("Expect", Emits::Changes),
            property::<String>("Restart", Emits::Changes),
            property::<LoadState>("LoadState", Emits::Changes),
            property::<String>("LoadError", Emits::Changes),
            property::<String>("FragmentPath", Emits::Changes),
            property::<bool>("NeedDaemonReload", Emits::Silently),
            property::<String>("ExecError", Emits::Changes),
            property::<String>("StatusText", Emits::Changes),
            property::<String>("Group", Emits::Changes),
            property::<String>("WorkingDirectory", Emits::Changes),
            property::<Vec<String>>("Environment", Emits::Changes),
            property::<u64>("RestartUSec", Emits::Changes),
            property::<u64>("TimeoutStartUSec", Emits::Changes),
            property::<u64>("TimeoutStopUSec", Emits::Changes),
            property::<u32>("StartLimitBurst", Emits::Changes),
            property::<u64>("StartLimitIntervalUSec", Emits::Changes),
            property::<i32>("KillSignal", Emits::Changes),
            property::<i32>("ReloadSignal", Emits::Changes),
            property::<String>("PIDFile", Emits::Changes),
            property::<String>("Output", Emits::Changes),
            property::<bool>("Autostart", Emits::Changes),
            method("Start", &[], &[]),
            method("Stop", &[], &[]),
            method("Restart", &[], &[]),
            method("Reload", &[], &[]),
            method("Kill", &[("signal", sig::<i32>())], &[]),
            method("ResetFailed", &[], &[]),
            method(
                "GetOutput",
                &[("lines", sig::<u32>())],
                &[sig::<Vec<OutputLine>>()],
            ),
            method("FollowOutput", &[], &[sig::<zbus::OwnedFd>()]),
            signal(
                "Adopted",
                &[("pid", sig::<u32>()), ("previous_pid", sig::<u32>())],
            ),
            signal(
                "Exited",
                &[
                    ("pid", sig::<u32>()),
                    ("code", sig::<i32>()),
                    ("signal", sig::<i32>()),
                ],
            ),
        ])
    }

    fn assert_same_members(in_xml: &BTreeSet<String>, in_rust: &BTreeSet<String>) {
        let only_xml: Vec<_> = in_xml.difference(in_rust).collect();
        let only_rust: Vec<_> = in_rust.difference(in_xml).collect();
        assert!(
            only_xml.is_empty() && only_rust.is_empty(),
            "only in org.adoptd1.xml: {only_xml:#?}\nonly in the Rust types: {only_rust:#?}"
        );
    }

    #[test]
    fn xml_declares_exactly_the_two_interfaces() {
        let interfaces = introspection::interface_members(INTROSPECTION_XML).unwrap();
        let names: Vec<&str> = interfaces.keys().map(String::as_str).collect();
        assert_eq!(names, [MANAGER_INTERFACE, SERVICE_INTERFACE]);
    }

    #[test]
    fn xml_manager_matches_the_rust_types() {
        let interfaces = introspection::interface_members(INTROSPECTION_XML).unwrap();
        assert_same_members(&interfaces[MANAGER_INTERFACE], &manager_members());
    }

    #[test]
    fn xml_service_matches_the_rust_types() {
        let interfaces = introspection::interface_members(INTROSPECTION_XML).unwrap();
        assert_same_members(&interfaces[SERVICE_INTERFACE], &service_members());
    }

    #[test]
    fn service_row_is_the_list_services_item() {
        assert_eq!(ServiceRow::SIGNATURE.to_string(), "(ssuutso)");
    }

    #[test]
    fn proxies_name_the_contracts_interfaces() {
        use zbus::proxy::Defaults;

        fn text<T: std::ops::Deref<Target = str>>(value: &Option<T>) -> Option<&str> {
            value.as_deref()
        }
        assert_eq!(text(ManagerProxy::INTERFACE), Some(MANAGER_INTERFACE));
        assert_eq!(text(ManagerProxy::DESTINATION), Some(BUS_NAME));
        assert_eq!(text(ManagerProxy::PATH), Some(MANAGER_PATH));
        assert_eq!(text(ServiceProxy::INTERFACE), Some(SERVICE_INTERFACE));
        assert_eq!(text(ServiceProxy::DESTINATION), Some(BUS_NAME));
        assert_eq!(text(ServiceProxy::PATH), None);
    }
}
