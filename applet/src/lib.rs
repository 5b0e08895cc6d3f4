//! adoptd-applet: a desktop window over adoptd's services, live from the
//! bus.
//!
//! - [`event`]: what the bus side tells the window side, in plain types;
//! - [`model`]: the services as GObjects in list stores, fed only by
//!   events; testable without a display;
//! - [`bus`]: the only code that knows adoptd's bus: the connection,
//!   adoptd's signals turned into events, and the control methods;
//! - [`window`]: the GTK view over the model;
//! - [`tray`]: the tray icon (StatusNotifierItem), a view fed by the model
//!   on a session-bus connection of its own.
//!
//! Threads: GTK's main loop owns the model and the window; the bus runs on
//! a tokio runtime in a thread of its own, the tray on another, and they
//! talk over channels only.

pub mod app;
pub mod bus;
pub mod event;
pub mod model;
pub mod options;
pub mod process_tree;
pub mod trace;
pub mod tray;
pub mod window;
