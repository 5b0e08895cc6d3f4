//! A desktop for one test: Xvfb, a session bus with the accessibility bus
//! on it, the applet, and a reader of its window through AT-SPI
//! (`reader.py`), all as one user (root, or nobody) in a scratch home.
//!
//! Nothing here touches a real user's files: HOME and the XDG
//! directories are in the scratch directory. Every process the desktop
//! starts, and those the session bus starts in turn (the accessibility
//! bus and its registry), carry a marker in their environment; dropping
//! the desktop kills them all by that marker, whatever path the test took.

#![allow(dead_code, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value as Json, json};

use adoptd_test_support::{Scratch, TIMEOUT, bus::which, signal};

/// How long the window may take to show something, on a loaded machine.
pub const WINDOW_TIMEOUT: Duration = Duration::from_secs(90);

/// The Python that has Debian's pyatspi (not a user's own).
const PYTHON: &str = "/usr/bin/python3";

/// The name of the marker variable.
const MARKER: &str = "ADOPTD_APPLET_TEST_DESKTOP";

/// Why the window tests cannot run here, if they cannot.
pub fn missing_tools() -> Option<String> {
    for (tool, package) in [
        ("Xvfb", "xvfb"),
        ("dbus-daemon", "dbus-daemon"),
        ("setpriv", "util-linux"),
    ] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (Debian package {package})"
            ));
        }
    }
    for (path, package) in [
        ("/usr/libexec/at-spi-bus-launcher", "at-spi2-core"),
        ("/usr/lib/python3/dist-packages/pyatspi", "python3-pyatspi"),
        ("/usr/lib/python3/dist-packages/PIL", "python3-pil"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (Debian package {package})"));
        }
    }
    None
}

/// Who the desktop's processes run as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum User {
    Root,
    Nobody,
}

/// A running desktop; see the module's header.
pub struct Desktop {
    user: User,
    marker: String,
    home: PathBuf,
    xvfb: Child,
    /// `:N`.
    pub display: String,
    session: Child,
    session_address: String,
    theme: Option<&'static str>,
}

impl Desktop {
    /// Starts Xvfb and a session bus for `user`; `theme` is a GTK_THEME
    /// (`Adwaita:dark`) or none.
    pub fn start(scratch: &Scratch, user: User, theme: Option<&'static str>) -> Self {
        let marker = format!("{}-{}", std::process::id(), scratch.path.display());
        let home = scratch.file("home");
        for dir in ["", "runtime", "cache", "config", "data"] {
            let dir = home.join(dir);
            std::fs::create_dir_all(&dir).expect("create the scratch home");
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("make the scratch home private");
            if user == User::Nobody {
                std::os::unix::fs::chown(&dir, Some(65534), Some(65534))
                    .expect("give the scratch home to nobody");
            }
        }
        let mut xvfb = Command::new("Xvfb");
        xvfb.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x720x24",
            "-nolisten",
            "tcp",
            "-ac",
            // An X server resets when its last client leaves, and refuses
            // connections meanwhile: a helper of the desktop that came and
            // went (at-spi's bus launcher sets a root window property)
            // must not make the applet's own connection fail.
            "-noreset",
        ])
        .env(MARKER, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let (xvfb, number) = spawn_reading_line(xvfb, "Xvfb");
        let display = format!(":{}", number.trim());

        let config = scratch.file("session.conf");
        let socket = home.join("runtime").join("session_bus_socket");
        std::fs::write(&config, session_config(&socket)).expect("write the session bus config");
        let mut session = Command::new("dbus-daemon");
        session
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"]);
        let mut desktop_session = Desktop {
            user,
            marker,
            home,
            xvfb,
            display,
            // Replaced just below; a placeholder that is already reaped.
            session: placeholder(),
            session_address: String::new(),
            theme,
        };
        let mut session = desktop_session.command(session);
        session.stdout(Stdio::piped()).stderr(Stdio::null());
        let (session, address) = spawn_reading_line(session, "dbus-daemon (session)");
        desktop_session.session = session;
        desktop_session.session_address = address.trim().to_owned();
        desktop_session
    }

    /// A path in the desktop user's home.
    pub fn home_file(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// `program` as the desktop's user, in its environment.
    pub fn command(&self, mut inner: Command) -> Command {
        let mut command = match self.user {
            User::Root => inner,
            User::Nobody => {
                let mut wrapped = Command::new("setpriv");
                wrapped
                    .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (key, value) in inner.get_envs() {
                    match value {
                        Some(value) => wrapped.env(key, value),
                        None => wrapped.env_remove(key),
                    };
                }
                inner = wrapped;
                inner
            }
        };
        command
            .env(MARKER, &self.marker)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("runtime"))
            .env("XDG_CACHE_HOME", self.home.join("cache"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("DISPLAY", &self.display)
            .env_remove("WAYLAND_DISPLAY")
            .env("GDK_BACKEND", "x11")
            .env("GTK_A11Y", "atspi")
            .env("NO_AT_BRIDGE", "0")
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
            .env_remove("ADOPTD_BUS_ADDRESS")
            .stdin(Stdio::null());
        if !self.session_address.is_empty() {
            command.env("DBUS_SESSION_BUS_ADDRESS", &self.session_address);
        }
        match self.theme {
            Some(theme) => command.env("GTK_THEME", theme),
            None => command.env_remove("GTK_THEME"),
        };
        command
    }

    /// Starts the applet on the bus at `address`, with extra arguments.
    pub fn applet(&self, address: &str, extra: &[&str]) -> Applet {
        self.applet_with(address, extra, &[])
    }

    /// Starts the applet with extra arguments and environment variables.
    pub fn applet_with(&self, address: &str, extra: &[&str], variables: &[(&str, &str)]) -> Applet {
        let mut inner = Command::new(env!("CARGO_BIN_EXE_adoptd-applet"));
        inner
            .arg("--address")
            .arg(address)
            .args(extra)
            .envs(variables.iter().copied());
        let mut command = self.command(inner);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start adoptd-applet");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, said) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ADOPTD_TEST_ECHO").is_some() {
                    eprintln!("applet| {line}");
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Applet { child, said }
    }

    /// Starts the AT-SPI reader, once it says it is ready.
    pub fn reader(&self) -> Reader {
        let mut inner = Command::new(PYTHON);
        inner.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/desktop/reader.py"));
        let mut command = self.command(inner);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start the AT-SPI reader");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut reader = Reader {
            child,
            stdin,
            answers,
            display: self.display.clone(),
        };
        let ready = reader.answer(TIMEOUT);
        assert_eq!(ready["ready"], true, "the reader did not start: {ready}");
        reader
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.session.kill().ok();
        self.session.wait().ok();
        self.xvfb.kill().ok();
        self.xvfb.wait().ok();
        kill_marked(&self.marker);
    }
}

/// Kills every process whose environment has this desktop's marker: what
/// the session bus activated (at-spi-bus-launcher, its bus, the registry)
/// is not a child of the test.
fn kill_marked(marker: &str) {
    let wanted = format!("{MARKER}={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environment) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environment
            .split(|&byte| byte == 0)
            .any(|variable| variable == wanted.as_bytes())
        {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// A child that has already been reaped, to hold a place.
fn placeholder() -> Child {
    let mut child = Command::new("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run true");
    child.wait().ok();
    child
}

/// Spawns `command` and returns it with the first line of its stdout.
fn spawn_reading_line(mut command: Command, what: &str) -> (Child, String) {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (sender, line) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first).ok();
        sender.send(first).ok();
        // Keep reading so the process never blocks on a full pipe.
        let mut rest = String::new();
        while reader.read_line(&mut rest).unwrap_or(0) > 0 {
            rest.clear();
        }
    });
    match line.recv_timeout(TIMEOUT) {
        Ok(first) if !first.trim().is_empty() => (child, first),
        _ => {
            child.kill().ok();
            child.wait().ok();
            panic!("{what} did not start");
        }
    }
}

/// A session bus that activates the accessibility bus from the system's
/// service files, lets only its user in, and listens on `socket`.
fn session_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// The applet, killed when dropped.
pub struct Applet {
    child: Child,
    said: mpsc::Receiver<String>,
}

impl Applet {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line on its stderr that satisfies `matches`.
    pub fn wait_said(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WINDOW_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.said.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("the applet never said {what}"),
            }
        }
    }

    /// What it said on stderr so far.
    pub fn said(&self) -> Vec<String> {
        self.said.try_iter().collect()
    }

    /// Asserts that it is still running (it never exits by itself).
    pub fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("wait for the applet");
        assert!(
            status.is_none(),
            "the applet exited ({status:?}): {:?}",
            self.said()
        );
    }
}

impl Drop for Applet {
    fn drop(&mut self) {
        let status = self.child.try_wait().ok().flatten();
        self.child.kill().ok();
        self.child.wait().ok();
        if std::thread::panicking() {
            // For the log of the failed test.
            eprintln!(
                "the applet {}; it said:\n{}",
                status.map_or("was running".to_owned(), |s| format!("had ended: {s}")),
                self.said().join("\n")
            );
        }
    }
}

/// The AT-SPI reader (`reader.py`), killed when dropped.
pub struct Reader {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    display: String,
}

impl Reader {
    fn ask(&mut self, command: Json, wait: Duration) -> Json {
        let asked = std::time::Instant::now();
        writeln!(self.stdin, "{command}").expect("write to the reader");
        self.stdin.flush().expect("flush the reader's input");
        // The reader has its own deadline; this one only catches a hang.
        let answer = self.answer(wait + TIMEOUT);
        // Said for the log of a failed test, never asserted.
        eprintln!("reader: {command} answered in {:?}", asked.elapsed());
        answer
    }

    fn answer(&mut self, wait: Duration) -> Json {
        let line = self
            .answers
            .recv_timeout(wait)
            .expect("the reader did not answer");
        serde_json::from_str(&line).expect("the reader answers JSON")
    }

    /// Waits until a row shows these texts in these columns (0 is the
    /// name, 1 the state, 2 the main PID, 3 the previous PID, 4 the
    /// hand-offs, 5 the restarts, 6 since); returns the row.
    pub fn wait_row(&mut self, what: &str, cells: &[(usize, &str)]) -> Vec<String> {
        let cells: serde_json::Map<String, Json> = cells
            .iter()
            .map(|(column, text)| (column.to_string(), json!(text)))
            .collect();
        let answer = self.ask(
            json!({"cmd": "wait-row", "timeout": WINDOW_TIMEOUT.as_secs(), "cells": cells}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(
            answer["ok"], true,
            "the window never showed {what}; it showed: {answer}"
        );
        serde_json::from_value(answer["row"].clone()).expect("a row of texts")
    }

    /// Waits until something in the window (its title included) has a
    /// name that holds `text`.
    pub fn wait_name(&mut self, text: &str) {
        let answer = self.ask(
            json!({"cmd": "wait-name", "timeout": WINDOW_TIMEOUT.as_secs(), "contains": text}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(
            answer["ok"], true,
            "the window never showed {text:?}; it showed: {answer}"
        );
    }

    /// Clicks the button `name` once it is there and sensitive.
    pub fn click(&mut self, name: &str) {
        let answer = self.ask(
            json!({"cmd": "click", "timeout": WINDOW_TIMEOUT.as_secs(), "name": name}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(answer["ok"], true, "no {name} button to click: {answer}");
    }

    /// Becomes the desktop's notification server, keeping what it is sent.
    pub fn serve_notifications(&mut self) {
        let answer = self.ask(json!({"cmd": "serve-notifications"}), TIMEOUT);
        assert_eq!(answer["ok"], true, "cannot serve notifications: {answer}");
    }

    /// Waits until a notification with this summary has come.
    pub fn wait_notification(&mut self, summary: &str) {
        let answer = self.ask(
            json!({"cmd": "wait-notification", "timeout": WINDOW_TIMEOUT.as_secs(), "summary": summary}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(answer["ok"], true, "no notification {summary:?}: {answer}");
    }

    /// Becomes the desktop's `org.kde.StatusNotifierWatcher`, keeping the
    /// items registered with it; called again, the name goes and comes
    /// back, as when a panel restarts.
    pub fn serve_watcher(&mut self) {
        let answer = self.ask(json!({"cmd": "serve-watcher"}), TIMEOUT);
        assert_eq!(answer["ok"], true, "cannot be the tray's watcher: {answer}");
    }

    /// Waits until `count` items have registered with the watcher;
    /// returns the service name each registered.
    pub fn wait_registered(&mut self, count: usize) -> Vec<String> {
        let answer = self.ask(
            json!({"cmd": "wait-registered", "timeout": WINDOW_TIMEOUT.as_secs(), "count": count}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(
            answer["ok"], true,
            "fewer than {count} tray registrations: {answer}"
        );
        answer["registered"]
            .as_array()
            .expect("the registrations")
            .iter()
            .map(|r| r["service"].as_str().expect("a service name").to_owned())
            .collect()
    }

    /// Waits until the tray item `item` has these properties (`ToolTip`:
    /// its text; `menu`: the labels of its menu, "-" a separator);
    /// returns what was read, `ids` the menu items' ids.
    /// With `signals`, waits too until the item has sent these signals
    /// since it registered; `signals` in the answer are all it sent.
    pub fn wait_tray(&mut self, what: &str, item: &str, expect: Json, signals: &[&str]) -> Json {
        let answer = self.ask(
            json!({"cmd": "wait-tray", "timeout": WINDOW_TIMEOUT.as_secs(), "item": item,
                   "expect": expect, "signals": signals}),
            WINDOW_TIMEOUT,
        );
        assert_eq!(
            answer["ok"], true,
            "the tray icon never said {what}: {answer}"
        );
        answer["read"].clone()
    }

    /// Calls a method of the tray item `item` (a `v` argument is given
    /// as a string).
    pub fn tray_call(
        &mut self,
        item: &str,
        path: &str,
        interface: &str,
        method: &str,
        signature: &str,
        args: Json,
    ) {
        let answer = self.ask(
            json!({"cmd": "tray-call", "item": item, "path": path, "interface": interface,
                   "method": method, "signature": signature, "args": args}),
            TIMEOUT,
        );
        assert_eq!(
            answer["ok"], true,
            "{method} on the tray icon failed: {answer}"
        );
    }

    /// A screenshot of the whole display, as PNG.
    pub fn screenshot(&mut self, path: &Path) {
        let answer = self.ask(
            json!({"cmd": "shot", "display": self.display, "path": path}),
            TIMEOUT,
        );
        assert_eq!(answer["ok"], true, "no screenshot: {answer}");
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        writeln!(self.stdin, "{}", json!({"cmd": "quit"})).ok();
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
