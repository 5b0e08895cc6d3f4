//! The tray icon: a StatusNotifierItem (`org.kde.StatusNotifierItem`) and
//! its menu (`com.canonical.dbusmenu`), as KDE, GNOME with the
//! AppIndicator extension and most panels show them.
//!
//! - this module: the [`Aggregate`], what the icon says, computed from the
//!   model's [`Tally`] and [`Availability`]; plain data, tested without a
//!   display or a bus;
//! - [`item`]: the two D-Bus objects on the *session* bus (a connection of
//!   their own; adoptd's stays as it is), and the registration with
//!   `org.kde.StatusNotifierWatcher`, again each time a watcher appears.
//!
//! The model stays the owner of state: the tray is a view fed by it. Each
//! tally or availability change sends a new [`Aggregate`] to the tray's
//! thread; a click there comes back to GTK's main loop as an [`Action`].
//! No session bus or no watcher is no error: the window works as before.

pub mod item;

use crate::model::{Availability, Tally, look};

pub use self::item::spawn;

/// What the icon says about adoptd's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// `Passive`, `Active` or `NeedsAttention`.
    pub status: &'static str,
    /// A freedesktop icon name that says the state by its shape too.
    pub icon: &'static str,
    pub title: String,
    /// The state in words: "3 running, 1 failed: web".
    pub tooltip: String,
    /// The failed services, sorted: one menu item each.
    pub failed: Vec<String>,
}

/// What a click on the icon or its menu asks of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open (or raise) the status window.
    Open,
    /// Open the window on this service, as `--show NAME` does.
    Show(String),
    Quit,
}

pub const TITLE: &str = "adoptd status";

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate::of(&Tally::default(), &Availability::Connecting)
    }
}

impl Aggregate {
    pub fn of(tally: &Tally, availability: &Availability) -> Self {
        let title = TITLE.to_owned();
        match availability {
            Availability::Connecting | Availability::Listing { .. } => {
                return Aggregate {
                    status: "Active",
                    icon: "emblem-synchronizing",
                    title,
                    tooltip: "Looking for adoptd…".to_owned(),
                    failed: Vec::new(),
                };
            }
            Availability::Gone { .. } => {
                return Aggregate {
                    status: "Active",
                    icon: "dialog-warning",
                    title,
                    tooltip: "adoptd is not running".to_owned(),
                    failed: Vec::new(),
                };
            }
            Availability::Live { .. } => {}
        }
        let busy = tally
            .by_state
            .iter()
            .any(|(state, _)| matches!(look::look(state).urgency, 1 | 2));
        let (status, icon) = if !tally.failed.is_empty() {
            ("NeedsAttention", "dialog-error")
        } else if busy {
            ("Active", "emblem-synchronizing")
        } else {
            ("Passive", "emblem-default")
        };
        let counts: Vec<String> = tally
            .by_state
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        let mut tooltip = if counts.is_empty() {
            "no services".to_owned()
        } else {
            counts.join(", ")
        };
        if !tally.failed.is_empty() {
            tooltip.push_str(": ");
            tooltip.push_str(&tally.failed.join(", "));
        }
        Aggregate {
            status,
            icon,
            title,
            tooltip,
            failed: tally.failed.clone(),
        }
    }

    /// The menu's items, in order: id and label; id 0 is the root, a
    /// label `None` a separator.
    pub fn menu(&self) -> Vec<(i32, Option<String>)> {
        let mut items = vec![(MENU_OPEN, Some("Open adoptd status".to_owned()))];
        if !self.failed.is_empty() {
            items.push((MENU_SEPARATOR, None));
        }
        for (index, name) in self.failed.iter().enumerate() {
            items.push((failed_id(index), Some(format!("{name} — failed"))));
        }
        items.push((MENU_SEPARATOR + 1, None));
        items.push((MENU_QUIT, Some("Quit".to_owned())));
        items
    }

    /// What a click on the menu item `id` asks.
    pub fn action(&self, id: i32) -> Option<Action> {
        match id {
            MENU_OPEN => Some(Action::Open),
            MENU_QUIT => Some(Action::Quit),
            _ => {
                let index = usize::try_from(id.checked_sub(MENU_FAILED)?).ok()?;
                self.failed.get(index).cloned().map(Action::Show)
            }
        }
    }
}

const MENU_OPEN: i32 = 1;
const MENU_QUIT: i32 = 2;
const MENU_SEPARATOR: i32 = 3;
/// The first failed service's item; the others follow.
const MENU_FAILED: i32 = 100;

fn failed_id(index: usize) -> i32 {
    MENU_FAILED.saturating_add(i32::try_from(index).unwrap_or(i32::MAX - MENU_FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Availability {
        Availability::Live {
            bus: "session bus".to_owned(),
        }
    }

    fn tally(by_state: &[(&str, usize)], failed: &[&str]) -> Tally {
        Tally {
            total: by_state.iter().map(|(_, count)| count).sum(),
            by_state: by_state
                .iter()
                .map(|(state, count)| ((*state).to_owned(), *count))
                .collect(),
            failed: failed.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    #[test]
    fn all_running_is_passive() {
        let aggregate = Aggregate::of(&tally(&[("running", 3), ("stopped", 1)], &[]), &live());
        assert_eq!(aggregate.status, "Passive");
        assert_eq!(aggregate.icon, "emblem-default");
        assert_eq!(aggregate.tooltip, "3 running, 1 stopped");
        assert_eq!(aggregate.title, "adoptd status");
    }

    #[test]
    fn a_failure_needs_attention_and_is_named() {
        let aggregate = Aggregate::of(&tally(&[("failed", 1), ("running", 3)], &["web"]), &live());
        assert_eq!(aggregate.status, "NeedsAttention");
        assert_eq!(aggregate.icon, "dialog-error");
        assert_eq!(aggregate.tooltip, "1 failed, 3 running: web");
    }

    #[test]
    fn a_service_starting_is_active() {
        let aggregate = Aggregate::of(&tally(&[("starting", 1), ("running", 2)], &[]), &live());
        assert_eq!(aggregate.status, "Active");
        assert_eq!(aggregate.icon, "emblem-synchronizing");
    }

    #[test]
    fn without_adoptd_the_tooltip_says_so() {
        let gone = Availability::Gone {
            reason: "no".to_owned(),
        };
        let aggregate = Aggregate::of(&Tally::default(), &gone);
        assert_eq!(aggregate.tooltip, "adoptd is not running");
        assert_eq!(aggregate.status, "Active");
        assert_eq!(Aggregate::default().icon, "emblem-synchronizing");
    }

    #[test]
    fn the_menu_has_one_item_per_failed_service() {
        let aggregate = Aggregate::of(
            &tally(&[("failed", 2), ("running", 1)], &["db", "web"]),
            &live(),
        );
        let labels: Vec<Option<String>> = aggregate
            .menu()
            .into_iter()
            .map(|(_, label)| label)
            .collect();
        assert_eq!(
            labels,
            [
                Some("Open adoptd status"),
                None,
                Some("db — failed"),
                Some("web — failed"),
                None,
                Some("Quit"),
            ]
            .map(|label| label.map(str::to_owned))
        );
        let ids: Vec<i32> = aggregate.menu().into_iter().map(|(id, _)| id).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "ids are unique: {ids:?}");
        let web = aggregate.menu()[3].0;
        assert_eq!(aggregate.action(web), Some(Action::Show("web".to_owned())));
        assert_eq!(aggregate.action(1), Some(Action::Open));
        assert_eq!(aggregate.action(2), Some(Action::Quit));
        assert_eq!(aggregate.action(0), None);
        assert_eq!(aggregate.action(102), None);
    }

    #[test]
    fn all_well_the_menu_is_open_and_quit() {
        let aggregate = Aggregate::of(&tally(&[("running", 1)], &[]), &live());
        let labels: Vec<Option<String>> = aggregate
            .menu()
            .into_iter()
            .map(|(_, label)| label)
            .collect();
        assert_eq!(
            labels,
            [Some("Open adoptd status"), None, Some("Quit")].map(|l| l.map(str::to_owned))
        );
    }
}
