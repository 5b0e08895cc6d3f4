//! Reading the configuration directory and its files: the module's only
//! I/O. A file is read whole, capped at [`MAX_FILE_SIZE`], and parsed by
//! [`parse_str`], the pure part.

use std::{
    ffi::OsStr,
    fs,
    io::Read,
    os::unix::{ffi::OsStrExt, fs::OpenOptionsExt},
    path::Path,
};

use toml::de::DeTable;

use super::{
    ConfigError, ConfigErrorKind, FileNameProblem, Identity, Loaded, MAX_FILE_SIZE, Position,
    Template, Unit, build,
    document::Document,
    names::{FileKind, classify_file_name},
};

/// Loads every service file in `dir`.
///
/// Files named `*.toml` are service files; any such file whose name is not a
/// service or template name is an error. Hidden files, other files (editor
/// backups like `web.toml~` or `.web.toml.swp` included) and directories are
/// ignored; symlinks are followed. Never panics: a directory that cannot be
/// read gives one error and nothing else.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            loaded.errors.push(ConfigError::whole_file(
                dir,
                ConfigErrorKind::ReadDir(error),
            ));
            return loaded;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if is_service_file_name(&entry.file_name()) => paths.push(entry.path()),
            Ok(_) => {}
            Err(error) => loaded.errors.push(ConfigError::whole_file(
                dir,
                ConfigErrorKind::ReadDir(error),
            )),
        }
    }
    paths.sort();
    for path in paths {
        // A directory named like a service file is not one; anything else
        // that is not a regular file is refused by load_file.
        if fs::metadata(&path).is_ok_and(|metadata| metadata.is_dir()) {
            continue;
        }
        match load_file(&path) {
            Ok(Unit::Service(spec)) => loaded.services.push(spec),
            Ok(Unit::Template(template)) => {
                let (specs, errors) = template.instantiate_listed();
                loaded.services.extend(specs);
                loaded.errors.extend(errors);
                loaded.templates.insert(template.name.clone(), template);
            }
            Err(error) => loaded.errors.push(error),
        }
    }
    loaded.services.sort_by(|a, b| a.name.cmp(&b.name));
    loaded
}

/// Loads one service file, `NAME.toml` or `NAME@.toml`. The file must be a
/// regular file (symlinks followed) of at most [`MAX_FILE_SIZE`] bytes of
/// UTF-8.
pub fn load_file(path: &Path) -> Result<Unit, ConfigError> {
    let file_name = path.file_name().unwrap_or_default();
    let bad_name = |reason| {
        let name = file_name.to_string_lossy().into_owned();
        ConfigError::whole_file(path, ConfigErrorKind::BadFileName { name, reason })
    };
    let stem = (file_name.as_bytes().strip_suffix(b".toml"))
        .ok_or_else(|| bad_name(FileNameProblem::NotToml))?;
    let stem = std::str::from_utf8(stem).map_err(|_| bad_name(FileNameProblem::NotUtf8))?;
    classify_file_name(stem).map_err(|kind| ConfigError::whole_file(path, kind))?;
    let text = read_text(path)?;
    parse_str(stem, path, &text).map_err(|error| ConfigError {
        digest: Some(digest(&text)),
        ..error
    })
}

/// A fingerprint of a service file's text, to tell whether the file on
/// disk is still the one loaded (`NeedDaemonReload`).
pub fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same text gives the same
    // digest in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The [`digest`] of the file at `path` as it is now; `None` when it
/// cannot be read.
pub fn file_digest(path: &Path) -> Option<u64> {
    read_text(path).ok().map(|text| digest(&text))
}

/// Parses the text of a service file. `name_from_file` is the file name
/// without `.toml`: `"web"` for a plain service, `"apache2@"` for a
/// template. `path` only labels errors and [`ServiceSpec::source`].
pub fn parse_str(name_from_file: &str, path: &Path, text: &str) -> Result<Unit, ConfigError> {
    let kind =
        classify_file_name(name_from_file).map_err(|kind| ConfigError::whole_file(path, kind))?;
    let document = Document { path, text };
    let table = DeTable::parse(text).map_err(|error| document.syntax_error(&error))?;
    let mut raw = document.read_service(table.get_ref(), kind)?;
    raw.digest = digest(text);
    match kind {
        FileKind::Plain { name } => build(&raw, path, Identity::Plain { name }).map(Unit::Service),
        FileKind::Template { name } => {
            // Substitution cannot change what these checks look at (see the
            // module header), so checking with "%i" standing for itself finds
            // now every error any instance would have, bar user/group.
            let probe = Identity::Instance {
                template: name,
                instance: "%i",
            };
            build(&raw, path, probe)?;
            Ok(Unit::Template(Template {
                name: name.to_string(),
                source: path.to_path_buf(),
                instances: raw.instances.iter().map(|i| i.value.clone()).collect(),
                raw,
            }))
        }
    }
}

/// Service files are `*.toml` that are not hidden; the rest of a directory
/// (backups, swap files, READMEs) is someone else's business.
pub(super) fn is_service_file_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.starts_with(b".") && bytes.ends_with(b".toml")
}

/// Reads a file of at most [`MAX_FILE_SIZE`] bytes of UTF-8.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_error = |error| ConfigError::whole_file(path, ConfigErrorKind::Read(error));
    // O_NONBLOCK: opening a FIFO named like a service file must not hang
    // the loader; it is refused below like any other non-file.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(ConfigError::whole_file(path, ConfigErrorKind::NotAFile));
    }
    let too_large = || {
        ConfigError::whole_file(
            path,
            ConfigErrorKind::TooLarge {
                limit: MAX_FILE_SIZE,
            },
        )
    };
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    // The size can change between fstat and read; the cap holds anyway.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&error.as_bytes()[..valid]);
        let at = Position::of(&prefix, valid);
        ConfigError {
            line: Some(at.line),
            column: Some(at.column),
            ..ConfigError::whole_file(path, ConfigErrorKind::NotUtf8)
        }
    })
}
