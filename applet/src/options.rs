//! The command line.

use clap::Parser;

use crate::bus::Choice;

/// The desktop status window of adoptd: every service, live.
#[derive(Debug, Parser)]
#[command(name = "adoptd-applet", version)]
pub struct Options {
    /// Follow adoptd on the bus at this D-Bus address.
    #[arg(long, value_name = "ADDRESS", conflicts_with_all = ["system", "session"])]
    pub address: Option<String>,
    /// Follow adoptd on the system bus.
    #[arg(long, conflicts_with = "session")]
    pub system: bool,
    /// Follow adoptd on the session bus.
    #[arg(long)]
    pub session: bool,
    /// Select this service once it is there.
    #[arg(long, value_name = "NAME")]
    pub show: Option<String>,
    /// Send a desktop notification when a service fails.
    #[arg(long)]
    pub notify: bool,
}

impl Options {
    /// The bus, as adoptctl would choose it.
    pub fn choice(&self) -> Choice {
        if let Some(address) = &self.address {
            Choice::Address(address.clone())
        } else if self.system {
            Choice::System
        } else if self.session {
            Choice::Session
        } else {
            Choice::Auto
        }
    }
}
