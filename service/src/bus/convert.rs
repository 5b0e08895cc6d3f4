//! Every conversion between the daemon's own types and the contract's:
//! the tracker's state, main-pid source and result into `adoptd-dbus`'s
//! enums, an exit status into `ExitCode` and `ExitSignal`, a refused
//! request into the contract's error.

use adoptd_dbus::{Error, MainPidSource, ServiceResult, State};

use crate::{
    supervisor::RequestError,
    tracker::{self, CommandError, ExitStatus},
};

impl From<tracker::State> for State {
    fn from(state: tracker::State) -> Self {
        match state {
            tracker::State::Stopped => State::Stopped,
            tracker::State::Starting => State::Starting,
            tracker::State::Running => State::Running,
            tracker::State::Stopping => State::Stopping,
            tracker::State::Restarting => State::Restarting,
            tracker::State::Failed => State::Failed,
        }
    }
}

impl From<tracker::MainPidSource> for MainPidSource {
    fn from(source: tracker::MainPidSource) -> Self {
        match source {
            tracker::MainPidSource::Spawn => MainPidSource::Spawn,
            tracker::MainPidSource::Adoption => MainPidSource::Adoption,
            tracker::MainPidSource::PidFile => MainPidSource::PidFile,
            tracker::MainPidSource::Notify => MainPidSource::Notify,
            tracker::MainPidSource::Guess => MainPidSource::Guess,
        }
    }
}

impl From<tracker::RunResult> for ServiceResult {
    fn from(result: tracker::RunResult) -> Self {
        match result {
            tracker::RunResult::Success => ServiceResult::Success,
            tracker::RunResult::ExitCode => ServiceResult::ExitCode,
            tracker::RunResult::Signal => ServiceResult::Signal,
            tracker::RunResult::Timeout => ServiceResult::Timeout,
            tracker::RunResult::StartLimitHit => ServiceResult::StartLimitHit,
        }
    }
}

/// `ExitCode` and `ExitSignal`: the one that does not apply is −1.
pub(super) fn exit_code_and_signal(exit: Option<ExitStatus>) -> (i32, i32) {
    match exit {
        Some(ExitStatus::Code(code)) => (code, -1),
        Some(ExitStatus::Signal(signal)) => (-1, signal),
        None => (-1, -1),
    }
}

/// The contract's error for a refused request.
pub(super) fn request_error(error: RequestError) -> Error {
    // Each variant's message already names the service and the reason.
    let sentence = error.to_string();
    match error {
        RequestError::NoSuchService(_) => Error::NoSuchService(sentence),
        RequestError::InvalidName { .. } | RequestError::BadInstance { .. } => {
            Error::InvalidName(sentence)
        }
        RequestError::NotLoaded { .. } | RequestError::Reexec(_) => Error::Failed(sentence),
        RequestError::HeldBack { .. } => Error::AlreadyRunning(sentence),
        RequestError::Refused { source, .. } => match source {
            CommandError::AlreadyRunning => Error::AlreadyRunning(sentence),
            CommandError::NotRunning => Error::NotRunning(sentence),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_and_the_contract_spell_every_state_alike() {
        use tracker::State::*;
        for state in [Stopped, Starting, Running, Stopping, Restarting, Failed] {
            assert_eq!(State::from(state).as_str(), state.as_str());
        }
    }

    #[test]
    fn the_tracker_and_the_contract_spell_every_main_pid_source_alike() {
        use tracker::MainPidSource::*;
        for source in [Spawn, Adoption, PidFile, Notify, Guess] {
            assert_eq!(MainPidSource::from(source).as_str(), source.as_str());
        }
    }

    #[test]
    fn the_tracker_and_the_contract_spell_every_result_alike() {
        use tracker::RunResult::*;
        for result in [Success, ExitCode, Signal, Timeout, StartLimitHit] {
            assert_eq!(ServiceResult::from(result).as_str(), result.as_str());
        }
    }

    #[test]
    fn exit_code_and_signal_leave_the_other_at_minus_one() {
        assert_eq!(exit_code_and_signal(None), (-1, -1));
        assert_eq!(exit_code_and_signal(Some(ExitStatus::Code(3))), (3, -1));
        assert_eq!(exit_code_and_signal(Some(ExitStatus::Signal(9))), (-1, 9));
    }
}
