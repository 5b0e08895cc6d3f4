//! Service, template and instance names, and what a file name says the
//! file is. A name that passes here can become an object path label, a
//! path component and an argument without escaping anything.

use super::{ConfigErrorKind, FileNameProblem, MAX_NAME_LEN};

/// Checks a full service name, `"name"` or `"template@instance"`, such as
/// one that arrives over D-Bus: each part is non-empty, made of
/// `[A-Za-z0-9_.:-]` and not `.` or `..`; the whole is at most
/// [`MAX_NAME_LEN`] bytes. Whether such a service exists is not checked.
pub fn validate_service_name(name: &str) -> Result<(), NameError> {
    match split_name(name) {
        (template, Some(instance)) => {
            if template.is_empty() {
                return Err(NameError::MissingTemplate);
            }
            validate_name_part(template)?;
            if instance.is_empty() {
                return Err(NameError::MissingInstance {
                    template: template.to_string(),
                });
            }
            validate_instance_name(template, instance)
        }
        (plain, None) => {
            validate_name_part(plain)?;
            check_length(plain.len())
        }
    }
}

/// Splits `"apache2@chroot1"` into `("apache2", Some("chroot1"))` and
/// `"nginx"` into `("nginx", None)`, at the first `@`.
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((template, instance)) => (template, Some(instance)),
        None => (name, None),
    }
}

/// Why a text is not a service, template or instance name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("{name:?} contains {found:?}; names use only letters, digits and _ . : -")]
    BadCharacter { name: String, found: char },
    #[error("{name:?} is not a name (\".\" and \"..\" could escape a path)")]
    Dots { name: String },
    #[error("\"{template}@\" names a template; add an instance name after the @")]
    MissingInstance { template: String },
    #[error("the template name before the @ is empty")]
    MissingTemplate,
    #[error("{name:?} begins with '-', which a program would take for an option")]
    LeadingDash { name: String },
}

#[derive(Clone, Copy, Debug)]
pub(super) enum FileKind<'a> {
    Plain { name: &'a str },
    Template { name: &'a str },
}

/// What the file name (without `.toml`) says the file is.
pub(super) fn classify_file_name(stem: &str) -> Result<FileKind<'_>, ConfigErrorKind> {
    let bad_name = |error| ConfigErrorKind::BadFileName {
        name: format!("{stem}.toml"),
        reason: FileNameProblem::Name(error),
    };
    if let Some(name) = stem.strip_suffix('@') {
        validate_name_part(name).map_err(bad_name)?;
        // Leave room for "@" and a one-character instance.
        check_length(name.len() + 2).map_err(bad_name)?;
        return Ok(FileKind::Template { name });
    }
    match split_name(stem) {
        (template, Some(instance)) => {
            validate_name_part(template).map_err(bad_name)?;
            Err(ConfigErrorKind::InstanceFile {
                template: template.to_string(),
                instance: instance.to_string(),
            })
        }
        (name, None) => {
            validate_name_part(name).map_err(bad_name)?;
            check_length(name.len()).map_err(bad_name)?;
            Ok(FileKind::Plain { name })
        }
    }
}

pub(super) fn validate_name_part(part: &str) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(found) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(NameError::BadCharacter {
            name: part.to_string(),
            found,
        });
    }
    if part == "." || part == ".." {
        return Err(NameError::Dots {
            name: part.to_string(),
        });
    }
    Ok(())
}

pub(super) fn validate_instance_name(template: &str, instance: &str) -> Result<(), NameError> {
    validate_name_part(instance)?;
    // An instance is substituted into argv: "-x" would reach the program
    // as an option.
    if instance.starts_with('-') {
        return Err(NameError::LeadingDash {
            name: instance.to_string(),
        });
    }
    check_length(template.len() + 1 + instance.len())
}

pub(super) fn check_length(len: usize) -> Result<(), NameError> {
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { len });
    }
    Ok(())
}
