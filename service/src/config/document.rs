//! The walk of one file's TOML document: known keys, types, durations,
//! signals and choices, checked in file order with the position of every
//! value kept, so that each error points at its line.

use std::{collections::BTreeMap, ops::Range, path::Path, str::FromStr, time::Duration};

use adoptd_dbus::Signal;
use toml::{
    Spanned,
    de::{DeInteger, DeTable, DeValue},
};

use super::{
    ConfigError, ConfigErrorKind, DEFAULT_OUTPUT_BUFFER, Output, error::suggest_key,
    names::FileKind, parse_duration, parse_size,
};
use crate::{
    invocation::INVOCATION_VARIABLE,
    tracker::{Expect, Policy, Restart, StartLimit},
};

pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "description",
    "exec",
    "expect",
    "restart",
    "restart-delay",
    "start-limit",
    "stop-signal",
    "stop-timeout",
    "start-timeout",
    "reload-signal",
    "chroot",
    "user",
    "group",
    "working-directory",
    "environment",
    "pid-file",
    "output",
    "output-buffer",
    "autostart",
    "instances",
];

pub(super) const START_LIMIT_KEYS: &[&str] = &["burst", "interval"];

/// A line and column, 1-based, kept with raw values so that checks made
/// after parsing can still point at their line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) line: usize,
    pub(super) column: usize,
}

impl Position {
    pub(super) fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Located<T> {
    pub(super) value: T,
    pub(super) at: Position,
}

/// A service file after the checks that do not depend on an instance name:
/// known keys, types, durations, signals, choices. Strings that may hold
/// `%i` stay raw, with their positions.
#[derive(Clone, Debug)]
pub(super) struct RawService {
    pub(super) description: Option<Located<String>>,
    pub(super) exec: Vec<Located<String>>,
    /// Starts as [`Policy::default`], each key given replacing its part.
    pub(super) policy: Policy,
    pub(super) chroot: Option<Located<String>>,
    pub(super) user: Option<Located<String>>,
    pub(super) group: Option<Located<String>>,
    pub(super) working_directory: Option<Located<String>>,
    pub(super) environment: BTreeMap<String, Located<String>>,
    pub(super) pid_file: Option<Located<String>>,
    pub(super) output: Output,
    pub(super) output_buffer: usize,
    pub(super) autostart: bool,
    pub(super) instances: Vec<Located<String>>,
    /// The file's [`digest`](super::digest).
    pub(super) digest: u64,
}

/// The values a key may take, for enums spelled as strings in files.
pub(super) trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    /// For error messages: "no, on-failure or always".
    const CHOICES: &'static str;
    fn spelling(self) -> &'static str;
}

impl Choice for Expect {
    const ALL: &'static [Self] = &[
        Expect::Auto,
        Expect::Foreground,
        Expect::Fork,
        Expect::Daemon,
        Expect::Notify,
    ];
    const CHOICES: &'static str = "auto, foreground, fork, daemon or notify";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for Restart {
    const ALL: &'static [Self] = &[Restart::No, Restart::OnFailure, Restart::Always];
    const CHOICES: &'static str = "no, on-failure or always";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

impl Choice for Output {
    const ALL: &'static [Self] = &[Output::Log, Output::Null, Output::Inherit];
    const CHOICES: &'static str = "log, null or inherit";
    fn spelling(self) -> &'static str {
        self.as_str()
    }
}

/// "an integer", "a string", …, to finish "expected …, found …".
pub(super) fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

pub(super) fn integer_value(integer: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// The entries of a table in the order they appear in the file, so that
/// the first problem reported is the first one a reader meets.
pub(super) fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// One file's text, to turn byte spans into errors with lines and columns.
pub(super) struct Document<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Document<'_> {
    pub(super) fn position(&self, span: Range<usize>) -> Position {
        Position::of(self.text, span.start)
    }

    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        kind: ConfigErrorKind,
    ) -> ConfigError {
        ConfigError::at(self.path, self.position(span), key, kind)
    }

    pub(super) fn wrong_type(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
        expected: &'static str,
    ) -> ConfigError {
        let found = describe(value.get_ref());
        self.error(
            value.span(),
            key,
            ConfigErrorKind::WrongType { expected, found },
        )
    }

    pub(super) fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        // toml's messages may span lines; an error here is one line.
        let message = error.message().trim().replace('\n', "; ");
        let kind = ConfigErrorKind::Syntax(message);
        match error.span() {
            Some(span) => {
                let at = self.position(span);
                ConfigError {
                    line: Some(at.line),
                    column: Some(at.column),
                    ..ConfigError::whole_file(self.path, kind)
                }
            }
            None => ConfigError::whole_file(self.path, kind),
        }
    }

    pub(super) fn unknown_key(
        &self,
        key: &Spanned<toml::de::DeString<'_>>,
        prefix: &str,
        known: &'static [&'static str],
    ) -> ConfigError {
        self.error(
            key.span(),
            &format!("{prefix}{}", key.get_ref()),
            ConfigErrorKind::UnknownKey {
                suggestion: suggest_key(key.get_ref(), known),
                known,
            },
        )
    }

    pub(super) fn read_service(
        &self,
        table: &DeTable<'_>,
        kind: FileKind<'_>,
    ) -> Result<RawService, ConfigError> {
        let mut raw = RawService {
            description: None,
            exec: Vec::new(),
            policy: Policy::default(),
            chroot: None,
            user: None,
            group: None,
            working_directory: None,
            environment: BTreeMap::new(),
            pid_file: None,
            output: Output::Log,
            output_buffer: DEFAULT_OUTPUT_BUFFER,
            autostart: true,
            instances: Vec::new(),
            digest: 0,
        };
        let mut has_exec = false;
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref();
            match name {
                "description" => raw.description = Some(self.string(value, name)?),
                "exec" => {
                    raw.exec = self.exec(value)?;
                    has_exec = true;
                }
                "expect" => raw.policy.expect = self.choice(value, name)?,
                "restart" => raw.policy.restart = self.choice(value, name)?,
                "restart-delay" => raw.policy.restart_delay = self.duration(value, name)?,
                "start-limit" => raw.policy.start_limit = self.start_limit(value)?,
                "stop-signal" => raw.policy.stop_signal = self.signal(value, name)?,
                "stop-timeout" => raw.policy.stop_timeout = self.duration(value, name)?,
                "start-timeout" => raw.policy.start_timeout = self.duration(value, name)?,
                "reload-signal" => raw.policy.reload_signal = self.signal(value, name)?,
                "chroot" => raw.chroot = Some(self.string(value, name)?),
                "user" => raw.user = Some(self.string(value, name)?),
                "group" => raw.group = Some(self.string(value, name)?),
                "working-directory" => raw.working_directory = Some(self.string(value, name)?),
                "environment" => raw.environment = self.environment(value)?,
                "pid-file" => raw.pid_file = Some(self.string(value, name)?),
                "output" => raw.output = self.choice(value, name)?,
                "output-buffer" => raw.output_buffer = self.size(value, name)?,
                "autostart" => raw.autostart = self.boolean(value, name)?,
                "instances" => match kind {
                    FileKind::Template { .. } => raw.instances = self.instances(value)?,
                    FileKind::Plain { name: service } => {
                        return Err(self.error(
                            key.span(),
                            name,
                            ConfigErrorKind::InstancesOutsideTemplate {
                                name: service.to_string(),
                            },
                        ));
                    }
                },
                _ => return Err(self.unknown_key(key, "", TOP_LEVEL_KEYS)),
            }
        }
        if !has_exec {
            return Err(ConfigError {
                key: Some("exec".to_string()),
                ..ConfigError::whole_file(self.path, ConfigErrorKind::MissingExec)
            });
        }
        Ok(raw)
    }

    /// A string that may hold `%i`; NUL is refused here because no
    /// substitution can remove it.
    pub(super) fn string(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<Located<String>, ConfigError> {
        match value.get_ref() {
            DeValue::String(text) if text.contains('\0') => {
                Err(self.error(value.span(), key, ConfigErrorKind::Nul))
            }
            DeValue::String(text) => Ok(Located {
                value: text.to_string(),
                at: self.position(value.span()),
            }),
            _ => Err(self.wrong_type(value, key, "a string")),
        }
    }

    pub(super) fn exec(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<Located<String>>, ConfigError> {
        let elements = match value.get_ref() {
            DeValue::Array(elements) => elements,
            DeValue::String(line) => {
                let words: Vec<String> =
                    line.split_whitespace().map(|w| format!("{w:?}")).collect();
                let suggestion = if words.is_empty() {
                    "[\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]".to_string()
                } else {
                    format!("[{}]", words.join(", "))
                };
                return Err(self.error(
                    value.span(),
                    "exec",
                    ConfigErrorKind::ExecIsString { suggestion },
                ));
            }
            _ => return Err(self.wrong_type(value, "exec", "an array of strings (the argv)")),
        };
        if elements.is_empty() {
            return Err(self.error(value.span(), "exec", ConfigErrorKind::ExecEmpty));
        }
        elements
            .iter()
            .enumerate()
            .map(|(index, element)| match element.get_ref() {
                DeValue::String(_) => self.string(element, "exec"),
                other => Err(self.error(
                    element.span(),
                    "exec",
                    ConfigErrorKind::ExecArgumentType {
                        index,
                        found: describe(other),
                    },
                )),
            })
            .collect()
    }

    pub(super) fn choice<T: Choice>(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<T, ConfigError> {
        let DeValue::String(text) = value.get_ref() else {
            return Err(self.wrong_type(value, key, "a string"));
        };
        T::ALL
            .iter()
            .copied()
            .find(|choice| choice.spelling() == text.as_ref())
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    key,
                    ConfigErrorKind::InvalidChoice {
                        value: text.to_string(),
                        choices: T::CHOICES,
                    },
                )
            })
    }

    pub(super) fn boolean(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<bool, ConfigError> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Ok(*flag),
            _ => Err(self.wrong_type(value, key, "true or false (without quotes)")),
        }
    }

    /// A duration string; a bare number is seconds, as systemd reads it.
    pub(super) fn duration(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Integer(integer) => integer.to_string(),
            DeValue::Float(float) => float.to_string(),
            _ => return Err(self.wrong_type(value, key, "a duration such as \"10s\"")),
        };
        parse_duration(&text).map_err(|error| {
            self.error(value.span(), key, ConfigErrorKind::Duration { text, error })
        })
    }

    /// A size in bytes: a string such as `"64KiB"`, or a bare integer.
    pub(super) fn size(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<usize, ConfigError> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Integer(integer) => integer.to_string(),
            _ => return Err(self.wrong_type(value, key, "a size such as \"64KiB\"")),
        };
        parse_size(&text)
            .map_err(|error| self.error(value.span(), key, ConfigErrorKind::Size { text, error }))
    }

    pub(super) fn signal(
        &self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Result<Signal, ConfigError> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            // Decimal, so that 0x0f reads as 15 and a huge number is out of range.
            DeValue::Integer(integer) => integer_value(integer)
                .map_or_else(|| integer.as_str().to_string(), |number| number.to_string()),
            _ => {
                return Err(self.wrong_type(
                    value,
                    key,
                    "a signal name such as \"TERM\", or a number",
                ));
            }
        };
        Signal::from_str(&text)
            .map_err(|error| self.error(value.span(), key, ConfigErrorKind::Signal { text, error }))
    }

    pub(super) fn start_limit(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<StartLimit, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "start-limit",
                "a table such as { burst = 5, interval = \"10s\" }",
            ));
        };
        let mut limit = Policy::default().start_limit;
        for (key, value) in in_file_order(table) {
            match key.get_ref().as_ref() {
                "burst" => limit.burst = self.burst(value)?,
                "interval" => {
                    limit.interval = self.duration(value, "start-limit.interval")?;
                    if limit.interval.is_zero() {
                        return Err(self.error(
                            value.span(),
                            "start-limit.interval",
                            ConfigErrorKind::ZeroInterval,
                        ));
                    }
                }
                _ => return Err(self.unknown_key(key, "start-limit.", START_LIMIT_KEYS)),
            }
        }
        Ok(limit)
    }

    pub(super) fn burst(&self, value: &Spanned<DeValue<'_>>) -> Result<u32, ConfigError> {
        let DeValue::Integer(integer) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "start-limit.burst",
                "a whole number (without quotes)",
            ));
        };
        integer_value(integer)
            .and_then(|number| u32::try_from(number).ok())
            .filter(|burst| *burst >= 1)
            .ok_or_else(|| {
                self.error(
                    value.span(),
                    "start-limit.burst",
                    ConfigErrorKind::Burst {
                        value: integer.to_string(),
                    },
                )
            })
    }

    pub(super) fn environment(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<BTreeMap<String, Located<String>>, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "environment",
                "a table of strings such as { LANG = \"C\" }",
            ));
        };
        let mut environment = BTreeMap::new();
        for (key, value) in in_file_order(table) {
            let name: &str = key.get_ref();
            if !is_environment_name(name) {
                return Err(self.error(
                    key.span(),
                    "environment",
                    ConfigErrorKind::EnvironmentName {
                        name: name.to_string(),
                    },
                ));
            }
            if name == INVOCATION_VARIABLE {
                return Err(self.error(
                    key.span(),
                    "environment",
                    ConfigErrorKind::ReservedVariable {
                        name: INVOCATION_VARIABLE,
                    },
                ));
            }
            let key_path = format!("environment.{name}");
            let located = match value.get_ref() {
                DeValue::String(_) => self.string(value, &key_path)?,
                other => {
                    return Err(self.error(
                        value.span(),
                        &key_path,
                        ConfigErrorKind::EnvironmentValue {
                            found: describe(other),
                        },
                    ));
                }
            };
            environment.insert(name.to_string(), located);
        }
        Ok(environment)
    }

    /// The listed names, unchecked: each bad one is its own error when the
    /// template is instantiated, so the good ones still load.
    pub(super) fn instances(
        &self,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<Vec<Located<String>>, ConfigError> {
        let DeValue::Array(elements) = value.get_ref() else {
            return Err(self.wrong_type(value, "instances", "an array of instance names"));
        };
        elements
            .iter()
            .map(|element| match element.get_ref() {
                DeValue::String(name) => Ok(Located {
                    value: name.to_string(),
                    at: self.position(element.span()),
                }),
                _ => Err(self.wrong_type(element, "instances", "an instance name (a string)")),
            })
            .collect()
    }
}

pub(super) fn is_environment_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
