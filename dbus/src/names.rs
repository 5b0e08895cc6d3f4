//! Where adoptd lives on the bus: its well-known name, object paths,
//! interface names, polkit actions and private bus socket.
//!
//! Object paths name services through systemd's bus-label escaping, so an
//! admin who knows `busctl` paths of systemd units can read ours. The
//! escaping is a bijection between strings and labels: [`unescape_label`]
//! accepts only what [`escape_label`] produces, so one service has exactly
//! one path and one path names at most one service.

use std::{
    fmt::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use zbus::{ObjectPath, OwnedObjectPath};

/// The well-known bus name adoptd owns.
pub const BUS_NAME: &str = "org.adoptd1";
/// The object path of the manager object.
pub const MANAGER_PATH: &str = "/org/adoptd1";
/// The parent of every service object: `SERVICE_PATH_PREFIX/<escaped name>`.
pub const SERVICE_PATH_PREFIX: &str = "/org/adoptd1/service";
/// The interface of the manager object.
pub const MANAGER_INTERFACE: &str = "org.adoptd1.Manager";
/// The interface of each service object.
pub const SERVICE_INTERFACE: &str = "org.adoptd1.Service";
/// The polkit action a caller other than root needs for control methods.
pub const POLKIT_ACTION: &str = "org.adoptd1.manage";
/// The polkit action a caller other than root needs to read a service's
/// output (`GetOutput`, `FollowOutput`): output may hold secrets.
pub const POLKIT_READ_OUTPUT_ACTION: &str = "org.adoptd1.read-output";

/// The private bus socket of a root adoptd (`--private-bus`).
pub const ROOT_PRIVATE_BUS_PATH: &str = "/run/adoptd/bus";

/// The object path of service `name`: `apache2@chroot1` →
/// `/org/adoptd1/service/apache2_40chroot1`.
pub fn service_path(name: &str) -> OwnedObjectPath {
    let path = format!("{SERVICE_PATH_PREFIX}/{}", escape_label(name));
    // An escaped label is non-empty and only [A-Za-z0-9_], so the path is
    // valid by construction.
    ObjectPath::from_string_unchecked(path).into()
}

/// The service name a service object path stands for; `None` for paths that
/// are not directly below [`SERVICE_PATH_PREFIX`] or whose label is not one
/// that [`escape_label`] produces.
pub fn service_name_from_path(path: &ObjectPath<'_>) -> Option<String> {
    let label = path
        .as_str()
        .strip_prefix(SERVICE_PATH_PREFIX)?
        .strip_prefix('/')?;
    unescape_label(label)
}

/// Escapes `name` into one object-path element the way systemd escapes unit
/// names (`bus_label_escape`): every byte outside `[A-Za-z0-9]`, and a digit
/// in first position, becomes `_` and two lower-case hex digits; the empty
/// string becomes `_`.
pub fn escape_label(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut label = String::with_capacity(name.len());
    for (index, byte) in name.bytes().enumerate() {
        let kept = byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit());
        if kept {
            label.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(label, "_{byte:02x}");
        }
    }
    label
}

/// Reverses [`escape_label`]. Returns `None` for a label `escape_label`
/// cannot have produced: characters outside `[A-Za-z0-9_]`, a malformed or
/// upper-case `_xx`, an escape of a byte that is never escaped, or bytes that
/// are not UTF-8.
pub fn unescape_label(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'_' {
            let high = hex_digit(*bytes.get(index + 1)?)?;
            let low = hex_digit(*bytes.get(index + 2)?)?;
            name.push(high << 4 | low);
            index += 3;
        } else if byte.is_ascii_alphanumeric() {
            name.push(byte);
            index += 1;
        } else {
            return None;
        }
    }
    let name = String::from_utf8(name).ok()?;
    // Rejects the non-canonical spellings (`_61` for `a`, a bare leading
    // digit) so that the mapping stays one-to-one.
    (escape_label(&name) == label).then_some(name)
}

/// The environment variable that names another directory for adoptd's
/// runtime files (the private bus socket), instead of `/run/adoptd` or
/// `$XDG_RUNTIME_DIR/adoptd`: for tests, and for running a second adoptd
/// beside the real one. Ignored unless absolute.
pub const RUNTIME_DIR_VARIABLE: &str = "ADOPTD_RUNTIME_DIR";

/// The private bus socket for this process: `bus` in
/// `$ADOPTD_RUNTIME_DIR` when that is set, else [`private_bus_path`].
pub fn private_bus_socket(uid: u32) -> Option<PathBuf> {
    if let Some(directory) = std::env::var_os(RUNTIME_DIR_VARIABLE)
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
    {
        return Some(directory.join("bus"));
    }
    let xdg_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    private_bus_path(uid, xdg_runtime_dir.as_deref())
}

/// The private bus socket (`adoptd --private-bus`): [`ROOT_PRIVATE_BUS_PATH`]
/// for uid 0, `$XDG_RUNTIME_DIR/adoptd/bus` for everyone else. `None` when a
/// non-root user has no absolute `XDG_RUNTIME_DIR` (the XDG base directory
/// specification says to ignore a relative one).
pub fn private_bus_path(uid: u32, xdg_runtime_dir: Option<&Path>) -> Option<PathBuf> {
    if uid == 0 {
        return Some(PathBuf::from(ROOT_PRIVATE_BUS_PATH));
    }
    let runtime_dir = xdg_runtime_dir.filter(|dir| dir.is_absolute())?;
    Some(runtime_dir.join("adoptd").join("bus"))
}

/// The D-Bus address of the socket at `socket`: `unix:path=…`, with the
/// bytes that D-Bus addresses reserve percent-escaped.
pub fn private_bus_address(socket: &Path) -> String {
    let mut address = String::from("unix:path=");
    for &byte in socket.as_os_str().as_bytes() {
        // The D-Bus specification's "optionally escaped" bytes.
        let plain = byte.is_ascii_alphanumeric() || b"-_/.\\*".contains(&byte);
        if plain {
            address.push(char::from(byte));
        } else {
            let _ = write!(address, "%{byte:02x}");
        }
    }
    address
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_instance_escapes_the_at_sign() {
        assert_eq!(
            service_path("apache2@chroot1").as_str(),
            "/org/adoptd1/service/apache2_40chroot1"
        );
    }

    #[test]
    fn empty_name_is_a_lone_underscore() {
        assert_eq!(escape_label(""), "_");
        assert_eq!(unescape_label("_").as_deref(), Some(""));
        assert_eq!(service_path("").as_str(), "/org/adoptd1/service/_");
    }

    #[test]
    fn underscore_itself_is_escaped() {
        assert_eq!(escape_label("_"), "_5f");
        assert_eq!(escape_label("a_b"), "a_5fb");
        assert_eq!(unescape_label("_5f").as_deref(), Some("_"));
    }

    #[test]
    fn leading_digit_is_escaped_like_systemd() {
        assert_eq!(escape_label("9p"), "_39p");
        assert_eq!(escape_label("p9"), "p9");
        assert_eq!(unescape_label("_39p").as_deref(), Some("9p"));
    }

    #[test]
    fn multi_byte_utf8_escapes_each_byte() {
        assert_eq!(escape_label("é"), "_c3_a9");
        assert_eq!(unescape_label("_c3_a9").as_deref(), Some("é"));
    }

    #[test]
    fn punctuation_of_instance_names_is_escaped() {
        assert_eq!(escape_label("a.b:c-d"), "a_2eb_3ac_2dd");
    }

    #[test]
    fn round_trip_holds_for_awkward_names() {
        for name in [
            "",
            "_",
            "__",
            "0",
            "007",
            "apache2@chroot1",
            "x@",
            "@",
            "a b",
            "ünïcödé",
            "日本",
            "🦀",
            "tab\there",
            "nul\0byte",
        ] {
            let label = escape_label(name);
            assert!(
                label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'),
                "{label:?}"
            );
            assert_eq!(unescape_label(&label).as_deref(), Some(name), "{label:?}");
            assert_eq!(
                service_name_from_path(&service_path(name).as_ref()).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn non_canonical_labels_are_refused() {
        for label in [
            "", "_6", "_6g", "_4A", "_61", "9p", "a-b", "a.b", "a/b", "_ff", "_c3",
        ] {
            assert_eq!(unescape_label(label), None, "{label:?}");
        }
    }

    #[test]
    fn only_paths_directly_below_the_prefix_name_services() {
        let name = |path: &'static str| {
            service_name_from_path(&ObjectPath::from_static_str(path).expect("valid path"))
        };
        assert_eq!(name("/org/adoptd1/service/nginx").as_deref(), Some("nginx"));
        assert_eq!(name("/org/adoptd1"), None);
        assert_eq!(name("/org/adoptd1/service"), None);
        assert_eq!(name("/org/adoptd1/servicex"), None);
        assert_eq!(name("/org/adoptd1/service/a/b"), None);
        assert_eq!(name("/org/adoptd1/services/nginx"), None);
    }

    #[test]
    fn root_uses_the_run_directory() {
        assert_eq!(
            private_bus_path(0, Some(Path::new("/run/user/0"))),
            Some(PathBuf::from("/run/adoptd/bus"))
        );
        assert_eq!(
            private_bus_path(0, None),
            Some(PathBuf::from("/run/adoptd/bus"))
        );
    }

    #[test]
    fn users_use_their_runtime_directory() {
        assert_eq!(
            private_bus_path(1000, Some(Path::new("/run/user/1000"))),
            Some(PathBuf::from("/run/user/1000/adoptd/bus"))
        );
        assert_eq!(private_bus_path(1000, None), None);
        assert_eq!(private_bus_path(1000, Some(Path::new("relative"))), None);
    }

    #[test]
    fn bus_address_escapes_reserved_bytes() {
        assert_eq!(
            private_bus_address(Path::new("/run/adoptd/bus")),
            "unix:path=/run/adoptd/bus"
        );
        assert_eq!(
            private_bus_address(Path::new("/tmp/a b,c=d;é")),
            "unix:path=/tmp/a%20b%2cc%3dd%3b%c3%a9"
        );
    }
}
