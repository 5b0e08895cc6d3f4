//! `/org/adoptd1`, interface `org.adoptd1.Manager`: adoptd itself, the
//! list of services, and the by-name methods.

use std::sync::Arc;

use adoptd_dbus::{Error, ServiceRow, State};
use zbus::{
    Connection, ObjectPath, OwnedObjectPath, interface,
    message::Header,
    object_server::{ResponseDispatchNotifier, SignalEmitter},
};

use super::{Shared, auth, convert::request_error};
use crate::{
    supervisor::{Request, Target},
    tracker::{Command, ServiceId},
};

/// The Manager object.
pub(super) struct Manager {
    pub(super) shared: Arc<Shared>,
}

#[interface(name = "org.adoptd1.Manager")]
impl Manager {
    /// adoptd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// The adoption source in use: adoptsig, proc-connector or procfs.
    #[zbus(property(emits_changed_signal = "const"))]
    fn tracker(&self) -> &'static str {
        self.shared.identity.source
    }

    /// init when adoptd is PID 1, else subreaper.
    #[zbus(property(emits_changed_signal = "const"))]
    fn role(&self) -> &'static str {
        self.shared.identity.role
    }

    /// How many reaped processes belonged to no service.
    #[zbus(property)]
    fn orphans_reaped(&self) -> u64 {
        self.shared.registry().orphans_reaped
    }

    /// Every service object, refused files included: name, State, MainPID,
    /// PreviousPID, StateChangeTimestamp, LoadState, object path.
    fn list_services(&self) -> Vec<ServiceRow> {
        let registry = self.shared.registry();
        registry
            .entries()
            .map(|entry| ServiceRow {
                name: entry.spec.name.clone(),
                state: State::from(entry.status.state),
                main_pid: entry.status.main_pid.unwrap_or(0),
                previous_pid: entry.status.previous_pid.unwrap_or(0),
                state_change_timestamp: entry.status.state_changed_at.realtime_us,
                load_state: entry.load.state,
                path: adoptd_dbus::service_path(&entry.spec.name),
            })
            .collect()
    }

    /// The object path of a loaded service; NoSuchService if there is none.
    async fn get_service(&self, name: &str) -> Result<OwnedObjectPath, Error> {
        check_name(name)?;
        let service = self
            .shared
            .ask(|reply| Request::Lookup {
                name: name.to_owned(),
                reply,
            })
            .await?
            .map_err(request_error)?;
        self.path_of(service, name).await
    }

    /// Starts a service, instantiating a template (apache2@chroot3) on demand.
    async fn start_service(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.control(name, Command::Start, &header, connection)
            .await
    }

    /// Stops a service; it is not restarted.
    async fn stop_service(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.control(name, Command::Stop, &header, connection).await
    }

    /// Stops a service, then starts it.
    async fn restart_service(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.control(name, Command::Restart, &header, connection)
            .await
    }

    /// Re-reads the configuration directory; Failed, naming them, when
    /// files were refused (the others are loaded all the same).
    async fn reload(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        auth::authorize(connection, &header, self.shared.owner_uid).await?;
        let (refused, published) = self.shared.ask(|reply| Request::Reload { reply }).await?;
        // Answer once the registry shows the reload: a client that reads
        // the services after the reply sees what it did.
        self.shared.wait_applied(published).await;
        match refused.as_slice() {
            [] => Ok(()),
            [one] => Err(Error::Failed(format!(
                "One service file was refused (the others are loaded): {one}"
            ))),
            many => Err(Error::Failed(format!(
                "{} service files were refused (the others are loaded): {}",
                many.len(),
                many.join("; ")
            ))),
        }
    }

    /// Re-executes adoptd in place (`adoptctl daemon-reexec`): it saves its
    /// whole state and executes its program anew, keeping its pid and every
    /// service. The reply leaves before the exec; the new image then owns
    /// the name again, with every object as it was.
    async fn reexecute(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<ResponseDispatchNotifier<()>, Error> {
        auth::authorize(connection, &header, self.shared.owner_uid).await?;
        let (notifier, sent) = ResponseDispatchNotifier::new(());
        let (answered, answered_wait) = tokio::sync::oneshot::channel();
        self.shared
            .ask(|reply| Request::Reexecute {
                reply,
                answered: answered_wait,
            })
            .await?
            .map_err(request_error)?;
        // The exec waits for the reply to leave, so the caller gets it.
        tokio::spawn(async move {
            sent.await;
            answered.send(()).ok();
        });
        Ok(notifier)
    }

    /// A service object appeared (loaded, or a template instantiated).
    #[zbus(signal)]
    pub(super) async fn service_added(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A service object went away (its file was removed, then Reload).
    #[zbus(signal)]
    pub(super) async fn service_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

impl Manager {
    async fn control(
        &self,
        name: &str,
        command: Command,
        header: &Header<'_>,
        connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        auth::authorize(connection, header, self.shared.owner_uid).await?;
        check_name(name)?;
        let (service, published) = self
            .shared
            .ask(|reply| Request::Control {
                service: Target::Name(name.to_owned()),
                command,
                reply,
            })
            .await?
            .map_err(request_error)?;
        // Answer once the registry shows what the command did: a client
        // that reads the service after the reply sees it (a new
        // instance `starting`, not the `stopped` it was made in).
        self.shared.wait_applied(published).await;
        self.path_of(service, name).await
    }

    /// The path of `service`, once its object is on the bus.
    async fn path_of(&self, service: ServiceId, name: &str) -> Result<OwnedObjectPath, Error> {
        self.shared.wait_published(service).await;
        Ok(adoptd_dbus::service_path(name))
    }
}

/// Refuses names no service can have before they reach the supervisor,
/// so that a huge string is neither copied nor echoed back.
pub(super) fn check_name(name: &str) -> Result<(), Error> {
    let limit = crate::config::MAX_NAME_LEN;
    if name.len() > limit {
        return Err(Error::InvalidName(format!(
            "A service name is at most {limit} bytes long; this one has {}.",
            name.len()
        )));
    }
    Ok(())
}
