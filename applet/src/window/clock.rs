//! The window's clock: a `now` property (µs since the epoch) that the
//! "since" texts are computed from, ticking once a second while the window
//! is shown. Only rows on screen watch it.

use std::cell::Cell;

use gtk::{glib, prelude::*, subclass::prelude::*};

use crate::event::now_micros;

glib::wrapper! {
    pub struct Clock(ObjectSubclass<imp::Clock>);
}

impl Clock {
    /// A clock that ticks for as long as it lives.
    pub fn new() -> Self {
        let clock: Self = glib::Object::new();
        clock.imp().now.set(now_micros());
        let weak = clock.downgrade();
        glib::timeout_add_seconds_local(1, move || match weak.upgrade() {
            Some(clock) => {
                clock.tick();
                glib::ControlFlow::Continue
            }
            None => glib::ControlFlow::Break,
        });
        clock
    }

    fn tick(&self) {
        self.imp().now.set(now_micros());
        self.notify("now");
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

mod imp {
    use super::*;

    #[derive(Default, glib::Properties)]
    #[properties(wrapper_type = super::Clock)]
    pub struct Clock {
        #[property(get)]
        pub now: Cell<u64>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Clock {
        const NAME: &'static str = "AdoptdClock";
        type Type = super::Clock;
    }

    #[glib::derived_properties]
    impl ObjectImpl for Clock {}
}
