//! What a service is configured as, and whether its file loaded, as the
//! properties that say it: compared before and after a reload, so that
//! each change is announced by one `PropertiesChanged` with exactly the
//! properties that changed.

use std::collections::HashMap;

use zbus::Variant;

use super::Entry;

/// Every property of `entry` that a reload, a start or sd_notify changes,
/// with its value (the same values the getters of `service.rs` return).
pub(super) fn properties(entry: &Entry) -> Vec<(&'static str, Variant<'static>)> {
    let spec = &entry.spec;
    let policy = &spec.policy;
    vec![
        ("Description", Variant::from(spec.description.clone())),
        ("Command", Variant::from(spec.exec.clone())),
        ("Chroot", Variant::from(path_text(spec.chroot()))),
        (
            "User",
            Variant::from(spec.user().unwrap_or_default().to_owned()),
        ),
        (
            "Group",
            Variant::from(spec.group().unwrap_or_default().to_owned()),
        ),
        (
            "WorkingDirectory",
            Variant::from(path_text(spec.working_directory())),
        ),
        ("Environment", Variant::from(environment(entry))),
        ("Expect", Variant::from(policy.expect.as_str())),
        ("Restart", Variant::from(policy.restart.as_str())),
        ("RestartUSec", Variant::from(micros(policy.restart_delay))),
        (
            "TimeoutStartUSec",
            Variant::from(micros(policy.start_timeout)),
        ),
        (
            "TimeoutStopUSec",
            Variant::from(micros(policy.stop_timeout)),
        ),
        ("StartLimitBurst", Variant::from(policy.start_limit.burst)),
        (
            "StartLimitIntervalUSec",
            Variant::from(micros(policy.start_limit.interval)),
        ),
        ("KillSignal", Variant::from(policy.stop_signal.number())),
        ("ReloadSignal", Variant::from(policy.reload_signal.number())),
        ("PIDFile", Variant::from(path_text(spec.pid_file()))),
        ("Output", Variant::from(spec.output.as_str())),
        ("Autostart", Variant::from(spec.autostart)),
        (
            "FragmentPath",
            Variant::from(spec.source.to_string_lossy().into_owned()),
        ),
        ("LoadState", Variant::from(entry.load.state.as_str())),
        (
            "LoadError",
            Variant::from(entry.load.error.clone().unwrap_or_default()),
        ),
        ("ExecError", Variant::from(entry.exec_error.clone())),
        ("StatusText", Variant::from(entry.status_text.clone())),
    ]
}

/// A configured path as text; empty when none.
pub(super) fn path_text(path: Option<&std::path::Path>) -> String {
    path.map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A duration in microseconds, as systemd's `*USec` properties.
pub(super) fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The service's environment as `K=V`, in name order.
pub(super) fn environment(entry: &Entry) -> Vec<String> {
    entry
        .spec
        .environment()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The properties whose values differ between `before` and `after`.
pub(super) fn changed(
    before: &[(&'static str, Variant<'static>)],
    after: Vec<(&'static str, Variant<'static>)>,
) -> HashMap<&'static str, Variant<'static>> {
    after
        .into_iter()
        .zip(before)
        .filter(|((_, new), (_, old))| new != old)
        .map(|((name, new), _)| (name, new))
        .collect()
}
