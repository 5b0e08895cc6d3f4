//! Which bus adoptd is on: the rule every client follows, from
//! `adoptd_dbus::choice` (the same as adoptctl's).

pub use adoptd_dbus::{ADDRESS_VARIABLE, Bus, BusChoice as Choice, choice::connect};
