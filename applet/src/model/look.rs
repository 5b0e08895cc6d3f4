//! How a `State` looks: a word, a symbol and a colour class, so that no
//! state is told apart by colour alone.
//!
//! The applet reads `State` as a string and never rejects one: a state
//! this version does not know is shown as it is, marked unknown.

use adoptd_dbus::State;

/// The look of one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// A symbol that differs per state, shown before the word.
    pub symbol: &'static str,
    /// The CSS class that colours it (see `window/style.css`).
    pub css_class: &'static str,
    /// Failed first, then the states in motion, then the steady ones.
    pub urgency: u8,
}

/// The look of `state`, the raw `State` string adoptd sent.
pub fn look(state: &str) -> Look {
    match state.parse::<State>() {
        Ok(State::Failed) => Look {
            symbol: "✖",
            css_class: "state-failed",
            urgency: 0,
        },
        Ok(State::Starting) => Look {
            symbol: "▶",
            css_class: "state-busy",
            urgency: 1,
        },
        Ok(State::Restarting) => Look {
            symbol: "↻",
            css_class: "state-busy",
            urgency: 1,
        },
        Ok(State::Stopping) => Look {
            symbol: "◼",
            css_class: "state-busy",
            urgency: 1,
        },
        Ok(State::Running) => Look {
            symbol: "✔",
            css_class: "state-running",
            urgency: 3,
        },
        Ok(State::Stopped) => Look {
            symbol: "○",
            css_class: "state-stopped",
            urgency: 4,
        },
        Err(_) => Look {
            symbol: "?",
            css_class: "state-unknown",
            urgency: 2,
        },
    }
}

/// The words shown for `state`: the state itself, or that it is unknown.
pub fn words(state: &str) -> String {
    if state.is_empty() {
        "unknown".to_owned()
    } else if state.parse::<State>().is_ok() {
        state.to_owned()
    } else {
        format!("unknown ({state})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_state_has_its_own_symbol() {
        let mut symbols: Vec<&str> = State::ALL.iter().map(|s| look(s.as_str()).symbol).collect();
        symbols.sort_unstable();
        symbols.dedup();
        assert_eq!(symbols.len(), State::ALL.len());
    }

    #[test]
    fn failed_is_the_most_urgent() {
        let failed = look("failed").urgency;
        for state in State::ALL.iter().filter(|s| **s != State::Failed) {
            assert!(look(state.as_str()).urgency > failed, "{state}");
        }
    }

    #[test]
    fn a_state_from_a_newer_adoptd_is_shown_not_refused() {
        assert_eq!(look("hibernating").css_class, "state-unknown");
        assert_eq!(words("hibernating"), "unknown (hibernating)");
        assert_eq!(words(""), "unknown");
        assert_eq!(words("running"), "running");
    }
}
