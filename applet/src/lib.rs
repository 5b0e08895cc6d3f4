//! adoptd-applet: a desktop window over adoptd's services, live from the
//! bus.
//!
//! - [`event`]: what the bus side tells the window side, in plain types;
//! - [`model`]: the services as GObjects in list stores, fed only by
//!   events; testable without a display;
//! - [`bus`]: the only code that knows zbus: the connection, adoptd's
//!   signals turned into events, and the control methods;
//! - [`window`]: the GTK view over the model.
//!
//! Threads: GTK's main loop owns the model and the window; the bus runs on
//! a tokio runtime in a thread of its own, and the two talk over channels
//! only.

pub mod app;
pub mod bus;
pub mod event;
pub mod model;
pub mod options;
pub mod process_tree;
pub mod trace;
pub mod window;
