//! Errors as one line of log: every module's errors are `thiserror` enums
//! with their causes as `source()`; this writes the whole chain.

/// An error and its causes on one line: "a: b: c".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
