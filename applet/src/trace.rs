//! Timing lines for measurements, on stderr when `ADOPTD_APPLET_TRACE=1`:
//! when a new main PID from the bus reached the model, and when the
//! window next painted (the frame that shows it). docs/BENCHMARKS.md's
//! hand-off figure is read from them.

use std::{cell::RefCell, rc::Rc, sync::OnceLock};

use gtk::prelude::*;

use crate::event::{BusEvent, now_micros};

/// Whether the lines are wanted.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("ADOPTD_APPLET_TRACE").is_some_and(|v| v == "1"))
}

/// What is worth a line in `event`: a new main PID.
pub fn describe(event: &BusEvent) -> Option<String> {
    let BusEvent::Changed { path, properties } = event else {
        return None;
    };
    let pid = properties
        .iter()
        .find(|(name, _)| name == "MainPID")
        .and_then(|(_, value)| value.as_u32())?;
    Some(format!("path={path} main_pid={pid}"))
}

/// Says `what` was applied now, in `took`, then again when `window` next
/// paints.
pub fn applied(window: &impl IsA<gtk::Widget>, what: String, took: std::time::Duration) {
    line(&format!("applied took_us={} {what}", took.as_micros()));
    let Some(clock) = window.frame_clock() else {
        return;
    };
    let handler = Rc::new(RefCell::new(None));
    let once = handler.clone();
    let id = clock.connect_after_paint(move |clock| {
        line(&format!("painted {what}"));
        if let Some(id) = once.borrow_mut().take() {
            clock.disconnect(id);
        }
    });
    *handler.borrow_mut() = Some(id);
}

fn line(what: &str) {
    let now = now_micros();
    eprintln!("trace at={}.{:06} {what}", now / 1_000_000, now % 1_000_000);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    #[test]
    fn only_a_new_main_pid_is_described() {
        let changed = |name: &str| BusEvent::Changed {
            path: "/org/adoptd1/service/x".into(),
            properties: vec![(name.into(), Value::Unsigned(7))],
        };
        assert_eq!(
            describe(&changed("MainPID")).as_deref(),
            Some("path=/org/adoptd1/service/x main_pid=7")
        );
        assert_eq!(describe(&changed("Restarts")), None);
    }
}
