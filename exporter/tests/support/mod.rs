//! What the exporter tests add to adoptd's own test support (included
//! from `service/tests/common/`): the exporter as a process, scrapes over
//! HTTP, and Prometheus.

#![allow(dead_code, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use adoptd_test_support::TIMEOUT;

/// A running adoptd-exporter, killed when dropped.
pub struct Exporter {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub port: u16,
}

impl Exporter {
    /// Starts the exporter on `address`, serving on `port`, and waits
    /// until it listens.
    pub fn start(address: &str, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_adoptd-exporter"))
            .args([
                "--address",
                address,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("ADOPTD_EXPORTER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start adoptd-exporter");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ADOPTD_TEST_ECHO").is_some() {
                    eprintln!("exporter| {line}");
                }
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut exporter = Exporter { child, lines, port };
        exporter.wait_for("serving /metrics");
        exporter
    }

    /// Waits for a log line containing `text`.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("the exporter did not log {text:?} within {TIMEOUT:?}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One scrape of /metrics.
    pub fn scrape(&self) -> Scrape {
        let (head, body) = get_accepting(
            self.port,
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        Scrape::parse(&body)
    }

    /// Scrapes until `done` holds for a scrape, which it returns.
    pub fn scrape_until(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let scrape = self.scrape();
            if done(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape showed {what} within {TIMEOUT:?}; the last:\n{}",
                scrape.text
            );
            // A scrape is cheap and answered from memory: asking again
            // soon is what a fast Prometheus would do.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A GET on loopback: the response head and body.
pub fn get(port: u16, path: &str) -> (String, String) {
    get_accepting(port, path, "*/*")
}

/// A GET on loopback with an `Accept` header.
pub fn get_accepting(port: u16, path: &str, accept: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

/// The samples of a scrape, by `name{labels}` as written.
pub struct Scrape {
    pub text: String,
    pub samples: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.rsplit_once(' '))
            .map(|(series, value)| (series.to_owned(), value.to_owned()))
            .collect();
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of `series` (`name{labels}`), if present.
    pub fn value(&self, series: &str) -> Option<&str> {
        self.samples.get(series).map(String::as_str)
    }

    pub fn is(&self, series: &str, value: &str) -> bool {
        self.value(series) == Some(value)
    }
}

/// The state series of `service` in `state`.
pub fn state(service: &str, state: &str) -> String {
    format!("adoptd_service_state{{name=\"{service}\",state=\"{state}\"}}")
}

/// A path under the exporter crate.
pub fn crate_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}
