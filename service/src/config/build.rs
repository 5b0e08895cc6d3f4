//! A parsed file into a [`ServiceSpec`]: substituting `%i` and checking
//! what substitution could affect.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{
    ConfigError, ConfigErrorKind, DEFAULT_PATH, Position, RawService, ServiceSpec, Uncommon,
    document::Located,
};

/// Which service a [`RawService`] is being built into.
#[derive(Clone, Copy)]
pub(super) enum Identity<'a> {
    Plain {
        name: &'a str,
    },
    Instance {
        template: &'a str,
        instance: &'a str,
    },
}

/// Substitutes the instance and checks what substitution could affect.
pub(super) fn build(
    raw: &RawService,
    source: &Path,
    identity: Identity<'_>,
) -> Result<ServiceSpec, ConfigError> {
    let error = |at: Position, key: &str, kind| ConfigError::at(source, at, key, kind);
    let (instance, plain_name) = match identity {
        Identity::Plain { name } => (None, name),
        Identity::Instance { instance, .. } => (Some(instance), ""),
    };
    let expand = |located: &Located<String>, key: &str| {
        expand_specifiers(&located.value, instance).ok_or_else(|| {
            error(
                located.at,
                key,
                ConfigErrorKind::InstanceSpecifierOutsideTemplate {
                    name: plain_name.to_string(),
                },
            )
        })
    };
    let absolute_path = |located: &Option<Located<String>>, key: &str| match located {
        None => Ok(None),
        Some(located) => {
            let path = expand(located, key)?;
            if path.starts_with('/') {
                Ok(Some(PathBuf::from(path)))
            } else {
                Err(error(
                    located.at,
                    key,
                    ConfigErrorKind::RelativePath { path },
                ))
            }
        }
    };
    let account = |located: &Option<Located<String>>, key: &str| match located {
        None => Ok(None),
        Some(located) => {
            let name = expand(located, key)?;
            if name.is_empty() {
                Err(error(located.at, key, ConfigErrorKind::Empty))
            } else if name.contains(':') {
                Err(error(located.at, key, ConfigErrorKind::Colon))
            } else {
                Ok(Some(name))
            }
        }
    };

    let description = match &raw.description {
        Some(description) => expand(description, "description")?,
        None => String::new(),
    };
    let exec = raw
        .exec
        .iter()
        .map(|argument| expand(argument, "exec"))
        .collect::<Result<Vec<_>, _>>()?;
    match (exec.first(), raw.exec.first()) {
        (Some(program), Some(located)) if !program.starts_with('/') => {
            return Err(error(
                located.at,
                "exec",
                ConfigErrorKind::ExecRelative {
                    program: program.clone(),
                    suggestion: absolute_suggestion(program),
                },
            ));
        }
        (Some(_), _) => {}
        // read_service refuses an empty exec; this keeps the invariant even
        // if that ever changes.
        (None, _) => {
            return Err(ConfigError {
                key: Some("exec".to_string()),
                ..ConfigError::whole_file(source, ConfigErrorKind::ExecEmpty)
            });
        }
    }
    let chroot = absolute_path(&raw.chroot, "chroot")?;
    let user = account(&raw.user, "user")?;
    let group = account(&raw.group, "group")?;
    let working_directory = absolute_path(&raw.working_directory, "working-directory")?;
    let environment = raw
        .environment
        .iter()
        .map(|(name, value)| Ok((name.clone(), expand(value, &format!("environment.{name}"))?)))
        .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
    let pid_file = absolute_path(&raw.pid_file, "pid-file")?;

    let (name, template, instance) = match identity {
        Identity::Plain { name } => (name.to_string(), None, None),
        Identity::Instance { template, instance } => (
            format!("{template}@{instance}"),
            Some(template.to_string()),
            Some(instance.to_string()),
        ),
    };
    let mut exec = exec;
    // Collected with room to spare; it is kept as long as the service.
    exec.shrink_to_fit();
    let uncommon = Uncommon {
        template,
        instance,
        chroot,
        user,
        group,
        working_directory,
        environment,
        pid_file,
    };
    Ok(ServiceSpec::new(
        name,
        source.to_path_buf(),
        raw.digest,
        description,
        exec,
        raw.policy,
        raw.output,
        raw.output_buffer,
        raw.autostart,
        uncommon,
    ))
}

/// Replaces `%i` with the instance and `%%` with `%`; any other `%` stays.
/// `None` when the text has `%i` but there is no instance (a plain service).
pub(super) fn expand_specifiers(text: &str, instance: Option<&str>) -> Option<String> {
    let mut expanded = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('%')) => {
                chars.next();
                expanded.push('%');
            }
            ('%', Some('i')) => {
                chars.next();
                expanded.push_str(instance?);
            }
            _ => expanded.push(c),
        }
    }
    Some(expanded)
}

/// An example absolute path for a relative program, for the error message.
/// Where the program is found along the PATH a service gets (so the hint
/// for `sleep` is `/usr/bin/sleep`), else a plausible place.
pub(super) fn absolute_suggestion(program: &str) -> String {
    let file_name = program.rsplit('/').next().unwrap_or(program);
    if file_name.is_empty() {
        return "/usr/bin/program".to_owned();
    }
    DEFAULT_PATH
        .split(':')
        .map(|directory| format!("{directory}/{file_name}"))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| format!("/usr/bin/{file_name}"))
}
