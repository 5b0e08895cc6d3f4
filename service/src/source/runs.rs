//! Which service's run a process comes from, by the invocation id adoptd
//! put in the run's environment (`ADOPTD_INVOCATION_ID`, see `spawn`).
//!
//! Every process forked from a service inherits its environment, so a
//! newcomer that left its service's session still names its run. Only the
//! latest run of each service is known: a leftover of an older run names
//! nothing and falls back to the other rules. A daemon that empties its
//! environment before it is seen names nothing either.

use std::collections::HashMap;

use crate::{
    invocation::{INVOCATION_VARIABLE, InvocationId},
    proc,
    tracker::{Pid, ServiceId},
};

/// How much of a process's environment is searched for the invocation id
/// (adoptd puts it after the few variables it sets, so it comes early
/// unless the daemon rebuilt its environment).
const ENVIRONMENT_READ_LIMIT: u64 = 64 * 1024;

/// Each service's latest run.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Runs {
    /// Service → its latest run's invocation id and session (the pid
    /// adoptd spawned, a session leader).
    latest: HashMap<ServiceId, (InvocationId, Pid)>,
    by_invocation: HashMap<InvocationId, ServiceId>,
    by_session: HashMap<Pid, ServiceId>,
    /// Scratch buffer for reading `environ` files.
    #[serde(skip)]
    environment: Vec<u8>,
}

impl Runs {
    /// adoptd started `pid` as `service`'s run `invocation`.
    pub fn started(&mut self, pid: Pid, service: ServiceId, invocation: InvocationId) {
        if let Some((old_invocation, old_session)) = self.latest.insert(service, (invocation, pid))
        {
            self.by_invocation.remove(&old_invocation);
            self.by_session.remove(&old_session);
        }
        self.by_invocation.insert(invocation, service);
        self.by_session.insert(pid, service);
    }

    /// Whether `session` is the session of a service's latest run.
    pub fn is_run_session(&self, session: Pid) -> bool {
        self.by_session.contains_key(&session)
    }

    /// The service of the latest run whose invocation id `pid`'s
    /// environment holds; `None` when unreadable, absent or of an older run.
    pub fn service_named_by_environment(&mut self, pid: Pid) -> Option<ServiceId> {
        proc::read_environment(pid, ENVIRONMENT_READ_LIMIT, &mut self.environment)?;
        let invocation = invocation_in(&self.environment)?;
        self.by_invocation.get(&invocation).copied()
    }
}

/// The invocation id in a NUL-separated environment block, if any.
pub(crate) fn invocation_in(environment: &[u8]) -> Option<InvocationId> {
    environment.split(|&b| b == 0).find_map(|entry| {
        let value = entry
            .strip_prefix(INVOCATION_VARIABLE.as_bytes())?
            .strip_prefix(b"=")?;
        InvocationId::parse(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invocation_id_is_found_among_other_variables() {
        let id = InvocationId::new();
        let environment = format!(
            "PATH=/bin\0{INVOCATION_VARIABLE}_OTHER=x\0{INVOCATION_VARIABLE}={id}\0LANG=C\0"
        );
        assert_eq!(invocation_in(environment.as_bytes()), Some(id));
    }

    #[test]
    fn a_malformed_or_missing_invocation_id_names_no_run() {
        for environment in [
            "PATH=/bin\0".to_owned(),
            format!("{INVOCATION_VARIABLE}=xyz\0"),
            format!("{INVOCATION_VARIABLE}={}\0", "F".repeat(32)),
            format!("{INVOCATION_VARIABLE}={}\0", "0".repeat(33)),
            format!("{INVOCATION_VARIABLE}\0"),
        ] {
            assert_eq!(
                invocation_in(environment.as_bytes()),
                None,
                "{environment:?}"
            );
        }
    }

    #[test]
    fn invocation_ids_are_distinct_and_read_back() {
        let (a, b) = (InvocationId::new(), InvocationId::new());
        assert_ne!(a, b);
        assert_eq!(InvocationId::parse(a.to_string().as_bytes()), Some(a));
    }

    #[test]
    fn only_the_latest_run_of_a_service_is_named() {
        let mut runs = Runs::default();
        let service = crate::tracker::Tracker::new().add_service(
            crate::tracker::Policy::default(),
            crate::tracker::Now {
                monotonic: std::time::Duration::ZERO,
                realtime_us: 0,
            },
        );
        let (first, second) = (InvocationId::new(), InvocationId::new());
        runs.started(100, service, first);
        runs.started(200, service, second);
        assert!(!runs.is_run_session(100));
        assert!(runs.is_run_session(200));
        assert_eq!(runs.by_invocation.get(&first), None);
        assert_eq!(runs.by_invocation.get(&second), Some(&service));
    }

    #[test]
    fn our_own_environment_names_no_run() {
        let mut runs = Runs::default();
        assert_eq!(runs.service_named_by_environment(std::process::id()), None);
    }
}
