//! `adoptd-applet`: parse the command line, run the window.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let options = adoptd_applet::options::Options::parse();
    let code = adoptd_applet::app::run(options);
    std::process::ExitCode::from(code.get())
}
