//! One line of a service's output: when it was read, from which stream,
//! and its text, cut to [`MAX_LINE`] bytes and made valid UTF-8.

use std::fmt::Write as _;

/// The longest line kept whole, in bytes of the service's output; a longer
/// one keeps its first `MAX_LINE` bytes and ends in [`CUT_MARK`].
pub const MAX_LINE: usize = 4096;

/// What ends a line that was cut.
pub const CUT_MARK: &str = " [cut]";

/// Which of the service's standard streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// `"stdout"` or `"stderr"`, as `GetOutput` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line, as `GetOutput` gives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    /// When adoptd read the line's end, in µs since the epoch.
    pub realtime_us: u64,
    pub stream: Stream,
    /// Without its newline; bytes that are not UTF-8 are written `\xNN`.
    pub text: Box<str>,
}

impl Line {
    /// A line from the raw bytes of the service's output (without the
    /// newline); `cut` says the output went on beyond them.
    pub fn from_output(realtime_us: u64, stream: Stream, bytes: &[u8], cut: bool) -> Line {
        let mut text = escape(bytes);
        if cut {
            text.push_str(CUT_MARK);
        }
        Line {
            realtime_us,
            stream,
            text: text.into_boxed_str(),
        }
    }

    /// What the line costs a record's budget: its text and its slot.
    pub fn cost(&self) -> usize {
        self.text.len() + std::mem::size_of::<Line>()
    }

    /// The line as one JSON object on a line of its own, as followers get
    /// it: `{"realtime":…,"stream":"stdout","line":"…"}` and a newline.
    pub fn to_json(&self) -> String {
        let mut json = String::with_capacity(self.text.len() + 64);
        // Writing to a String cannot fail.
        let _ = write!(
            json,
            "{{\"realtime\":{},\"stream\":\"{}\",\"line\":\"",
            self.realtime_us,
            self.stream.as_str()
        );
        for c in self.text.chars() {
            match c {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                '\n' => json.push_str("\\n"),
                '\r' => json.push_str("\\r"),
                '\t' => json.push_str("\\t"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(json, "\\u{:04x}", u32::from(c));
                }
                c => json.push(c),
            }
        }
        json.push_str("\"}\n");
        json
    }
}

/// `bytes` as text: valid UTF-8 as it is, every other byte as `\xNN`, so
/// nothing is dropped and the result is always a valid D-Bus string.
fn escape(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.replace('\0', "\\x00");
    }
    let mut text = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        text.push_str(&chunk.valid().replace('\0', "\\x00"));
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_not_dropped() {
        let line = Line::from_output(1, Stream::Stdout, b"caf\xc3\xa9 \xff\xfe end", false);
        assert_eq!(&*line.text, "café \\xff\\xfe end");
    }

    #[test]
    fn nul_is_escaped_since_no_dbus_string_may_hold_it() {
        let line = Line::from_output(1, Stream::Stdout, b"a\0b", false);
        assert_eq!(&*line.text, "a\\x00b");
    }

    #[test]
    fn a_cut_line_says_so() {
        let line = Line::from_output(1, Stream::Stderr, b"abc", true);
        assert_eq!(&*line.text, "abc [cut]");
    }

    #[test]
    fn json_escapes_quotes_backslashes_and_controls() {
        let line = Line::from_output(42, Stream::Stderr, b"say \"hi\"\\\t\x01", false);
        assert_eq!(
            line.to_json(),
            "{\"realtime\":42,\"stream\":\"stderr\",\"line\":\"say \\\"hi\\\"\\\\\\t\\u0001\"}\n"
        );
    }
}
