//! The tests of service files, one file a concept.

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::unwrap_used)]

pub(super) use std::{
    ffi::OsStr,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Duration,
};

pub(super) use adoptd_dbus::Signal;

pub(super) use super::{
    document::{Choice, TOP_LEVEL_KEYS},
    *,
};
pub(super) use crate::tracker::{Expect, Policy, Restart, StartLimit};

const DIR: &str = "/etc/adoptd/services";

fn parse(stem: &str, text: &str) -> Result<Unit, ConfigError> {
    parse_str(stem, &Path::new(DIR).join(format!("{stem}.toml")), text)
}

fn service(text: &str) -> ServiceSpec {
    match parse("web", text) {
        Ok(Unit::Service(spec)) => spec,
        other => panic!("expected a service, got {other:?}"),
    }
}

fn template(stem: &str, text: &str) -> Template {
    match parse(stem, text) {
        Ok(Unit::Template(template)) => template,
        other => panic!("expected a template, got {other:?}"),
    }
}

fn parse_error(stem: &str, text: &str) -> ConfigError {
    match parse(stem, text) {
        Err(error) => error,
        Ok(unit) => panic!("expected an error, got {unit:?}"),
    }
}

/// The error's text, for a plain service named "web".
fn message(text: &str) -> String {
    parse_error("web", text).to_string()
}

const EXEC: &str = "exec = [\"/usr/sbin/nginx\"]\n";

/// A fresh directory, removed when dropped.
struct ScratchDir(tempfile::TempDir);

impl ScratchDir {
    fn new(test: &str) -> Self {
        let directory = tempfile::Builder::new()
            .prefix(&format!("adoptd-config-{test}-"))
            .tempdir()
            .unwrap();
        ScratchDir(directory)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

fn names(services: &[ServiceSpec]) -> Vec<&str> {
    services.iter().map(|spec| spec.name.as_str()).collect()
}
mod duration;
mod files;
mod names;
mod service;
mod size;
mod template;
