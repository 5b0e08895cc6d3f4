//! `adoptctl`: parse the command line, run the command on a one-thread
//! runtime, exit with its status.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // clap exits with 2 on a usage error, as DESIGN asks.
    let cli = adoptctl::cli::Cli::parse();
    ExitCode::from(adoptctl::run(&cli).code())
}
