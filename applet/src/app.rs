//! The application: the model, the bus thread feeding it, the window.

use std::{rc::Rc, time::Duration};

use gtk::{gio, glib, prelude::*};
use tokio::sync::mpsc;

use crate::{
    bus,
    model::Model,
    options::Options,
    trace,
    tray::{self, Action, Aggregate},
    window::Window,
};

/// At most this many bus events are applied before the window may draw.
const BATCH: usize = 500;

/// The application id, also the name of the .desktop file.
pub const APPLICATION_ID: &str = "org.adoptd1.Applet";

/// Runs the applet until its window is closed.
pub fn run(options: Options) -> glib::ExitCode {
    let application = gtk::Application::builder()
        .application_id(APPLICATION_ID)
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let options = Rc::new(options);
    application.connect_startup(|_| load_style());
    application.connect_activate(move |application| {
        if let Err(e) = start(application, &options) {
            eprintln!("adoptd-applet: {e}");
            application.quit();
        }
    });
    // The command line is clap's; GTK gets none of it.
    application.run_with_args::<&str>(&[])
}

fn start(application: &gtk::Application, options: &Options) -> std::io::Result<()> {
    let model = Model::new();
    let (events, mut incoming) = mpsc::unbounded_channel();
    let requests = bus::spawn(options.choice(), events)?;
    let window = Window::new(application, &model, requests, options.show.clone());
    if options.notify {
        notify_failures(application, &model);
    }
    // No tray is no reason to fail: the window works without it.
    if let Err(e) = show_in_tray(application, &model, &window) {
        eprintln!("adoptd-applet: no tray icon: {e}");
    }
    // The bus side's events are applied on GTK's main loop, in order: the
    // model's only input.
    let painted = window.clone();
    glib::spawn_future_local(async move {
        while let Some(first) = incoming.recv().await {
            // Everything already waiting is one batch: one flush of the
            // rows' order, one frame.
            let mut next = Some(first);
            let started = std::time::Instant::now();
            let mut traced = Vec::new();
            let mut applied = 0;
            while let Some(event) = next {
                if trace::enabled()
                    && let Some(what) = trace::describe(&event)
                {
                    traced.push(what);
                }
                model.apply(event);
                applied += 1;
                next = if applied < BATCH {
                    incoming.try_recv().ok()
                } else {
                    None
                };
            }
            model.flush();
            for what in traced {
                trace::applied(&painted, what, started.elapsed());
            }
            if applied == BATCH {
                // A storm: let the window draw before the next batch.
                glib::timeout_future_with_priority(glib::Priority::LOW, Duration::ZERO).await;
            }
        }
    });
    window.present();
    Ok(())
}

/// Feeds the tray icon from the model (each tally and availability
/// change, no polling), and carries out its clicks.
fn show_in_tray(
    application: &gtk::Application,
    model: &Rc<Model>,
    window: &Window,
) -> std::io::Result<()> {
    let (actions, mut clicked) = mpsc::unbounded_channel();
    let aggregates = Rc::new(tray::spawn(actions)?);
    let send = {
        let aggregates = aggregates.clone();
        move |model: &Model| {
            let aggregate = Aggregate::of(&model.tally(), &model.availability());
            aggregates.send_if_modified(|shown| {
                let changed = *shown != aggregate;
                *shown = aggregate;
                changed
            });
        }
    };
    send(model);
    {
        let send = send.clone();
        model.connect_tally(move |model| send(model));
    }
    {
        let weak = Rc::downgrade(model);
        model.connect_availability(move |_| {
            if let Some(model) = weak.upgrade() {
                send(&model);
            }
        });
    }
    let application = application.downgrade();
    let window = window.downgrade();
    glib::spawn_future_local(async move {
        while let Some(action) = clicked.recv().await {
            let Some(window) = window.upgrade() else {
                break;
            };
            match action {
                Action::Open => window.present(),
                Action::Show(name) => {
                    window.select_service(&name);
                    window.present();
                }
                Action::Quit => {
                    if let Some(application) = application.upgrade() {
                        application.quit();
                    }
                }
            }
        }
    });
    Ok(())
}

/// Sends a desktop notification (through GLib, so to
/// `org.freedesktop.Notifications` or the desktop's own) each time a
/// service becomes failed; withdraws it once the service is no longer.
fn notify_failures(application: &gtk::Application, model: &Rc<Model>) {
    let failed_before = std::cell::RefCell::new(std::collections::BTreeSet::<String>::new());
    let application = application.downgrade();
    model.connect_tally(move |model| {
        let Some(application) = application.upgrade() else {
            return;
        };
        let failed: std::collections::BTreeSet<String> = model.tally().failed.into_iter().collect();
        let mut before = failed_before.borrow_mut();
        for name in failed.difference(&before) {
            let notification = gio::Notification::new(&format!("{name} failed"));
            notification.set_body(Some(&format!(
                "adoptd's service {name} failed. Open adoptd status for its exit and hand-offs."
            )));
            notification.set_priority(gio::NotificationPriority::High);
            application.send_notification(Some(&notification_id(name)), &notification);
        }
        for name in before.difference(&failed) {
            application.withdraw_notification(&notification_id(name));
        }
        *before = failed;
    });
}

fn notification_id(service: &str) -> String {
    format!("failed-{service}")
}

fn load_style() {
    let provider = gtk::CssProvider::new();
    provider.load_from_data(include_str!("window/style.css"));
    if let Some(display) = gtk::gdk::Display::default() {
        gtk::style_context_add_provider_for_display(
            &display,
            &provider,
            gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Key=Value` lines of a desktop entry's main group.
    fn entry(text: &str) -> std::collections::HashMap<&str, &str> {
        text.lines()
            .skip_while(|line| *line != "[Desktop Entry]")
            .skip(1)
            .take_while(|line| !line.starts_with('['))
            .filter_map(|line| line.split_once('='))
            .collect()
    }

    #[test]
    fn the_desktop_entries_start_the_applet() {
        for text in [
            include_str!("../data/org.adoptd1.Applet.desktop"),
            include_str!("../data/org.adoptd1.Applet-autostart.desktop"),
        ] {
            let entry = entry(text);
            assert_eq!(entry.get("Type"), Some(&"Application"));
            let exec = entry.get("Exec").copied().unwrap_or_default();
            assert_eq!(exec.split(' ').next(), Some("adoptd-applet"));
            assert!(entry.contains_key("Name"));
        }
        assert!(APPLICATION_ID.ends_with("Applet"));
    }
}
