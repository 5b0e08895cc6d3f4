//! The enumerated string properties of a service: `State`, `MainPIDSource`,
//! `Result` and `LoadState`.
//!
//! On the wire each is a plain string (signature `s`) spelled in lower-case
//! kebab-case, so `busctl` and scripts read them without knowing this crate;
//! in Rust they are enums, so a typo is a compile error. Serde and
//! [`zbus::Type`] use the wire spelling, which lets the daemon return them
//! from property getters and clients read them from proxies directly.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use zbus::{Signature, Type, Variant};

string_enum! {
    /// A service's `State` property.
    State {
        /// Not running, not asked to run (also after a clean exit).
        Stopped = "stopped",
        /// Spawned, waiting for readiness (`expect = fork | daemon | notify`).
        Starting = "starting",
        /// The main process is known and ready.
        Running = "running",
        /// Stop signal sent, waiting for the members to end.
        Stopping = "stopping",
        /// Ended and waiting for `restart-delay` before starting again.
        Restarting = "restarting",
        /// Ended unsuccessfully and not restarting; `Result` says why.
        Failed = "failed",
    }
}

string_enum! {
    /// How adoptd learnt the current `MainPID` (the `MainPIDSource` property).
    MainPidSource {
        /// adoptd spawned it.
        Spawn = "spawn",
        /// It was the one heir of the previous main process after a hand-off.
        Adoption = "adoption",
        /// Several candidates; the service's `pid-file` named this one.
        PidFile = "pid-file",
        /// The service told adoptd through sd_notify's `MAINPID=`.
        Notify = "notify",
        /// Several candidates and no pid-file: a session leader or the oldest.
        Guess = "guess",
    }
}

string_enum! {
    /// Whether the service's file loaded (the `LoadState` property).
    LoadState {
        /// The file as it is now was loaded.
        Loaded = "loaded",
        /// The file as it is now was refused (`LoadError` says why); a
        /// service loaded from an earlier version keeps running it.
        BadSetting = "bad-setting",
        /// The file is gone; the service is removed once it is stopped.
        NotFound = "not-found",
    }
}

string_enum! {
    /// Why the service last ended (the `Result` property).
    ServiceResult {
        /// It has not failed (or has not run yet).
        Success = "success",
        /// The main process exited with a non-zero code.
        ExitCode = "exit-code",
        /// The main process was killed by a signal.
        Signal = "signal",
        /// It did not start or stop in time.
        Timeout = "timeout",
        /// It was restarted too often within `start-limit.interval`.
        StartLimitHit = "start-limit-hit",
    }
}

/// A string that names no value of one of this module's enums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum that was parsed, e.g. `State`.
    pub kind: &'static str,
    /// The string that was not one of its values.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a valid {}", self.value, self.kind)
    }
}

impl std::error::Error for UnknownValue {}

/// Declares a unit enum carried on the wire as one of a fixed set of strings.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(de::Error::custom)
            }
        }

        impl Type for $name {
            const SIGNATURE: &'static Signature = &Signature::Str;
        }

        /// For `PropertiesChanged`, which carries values as variants.
        impl From<$name> for Variant<'static> {
            fn from(value: $name) -> Self {
                Variant::from(value.as_str())
            }
        }
    };
}
use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_parses_back_from_its_spelling() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(*state));
            assert_eq!(state.to_string(), state.as_str());
        }
        for source in MainPidSource::ALL {
            assert_eq!(source.as_str().parse::<MainPidSource>(), Ok(*source));
        }
        for result in ServiceResult::ALL {
            assert_eq!(result.as_str().parse::<ServiceResult>(), Ok(*result));
        }
    }

    #[test]
    fn spellings_are_the_contracts() {
        let states: Vec<_> = State::ALL.iter().map(|state| state.as_str()).collect();
        assert_eq!(
            states,
            [
                "stopped",
                "starting",
                "running",
                "stopping",
                "restarting",
                "failed"
            ]
        );
        assert_eq!(MainPidSource::PidFile.as_str(), "pid-file");
        assert_eq!(ServiceResult::ExitCode.as_str(), "exit-code");
        assert_eq!(ServiceResult::StartLimitHit.as_str(), "start-limit-hit");
    }

    #[test]
    fn unknown_spelling_is_refused_with_its_kind() {
        let error = "Running".parse::<State>().unwrap_err();
        assert_eq!(error.to_string(), "\"Running\" is not a valid State");
        assert!("pidfile".parse::<MainPidSource>().is_err());
    }

    #[test]
    fn variant_holds_the_spelling() {
        assert_eq!(Variant::from(State::Running), Variant::from("running"));
        assert_eq!(
            Variant::from(ServiceResult::StartLimitHit),
            Variant::from("start-limit-hit")
        );
    }

    #[test]
    fn wire_signature_is_a_string() {
        assert_eq!(State::SIGNATURE, &Signature::Str);
        assert_eq!(MainPidSource::SIGNATURE, &Signature::Str);
        assert_eq!(ServiceResult::SIGNATURE, &Signature::Str);
    }
}
