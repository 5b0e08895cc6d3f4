//! `adoptctl generate`: the man page and shell completions, made from the
//! same clap definition as `--help`.
//!
//! Everything is rendered into memory first and written at once, so a
//! reader that goes away early (`adoptctl generate completions bash |
//! head`) is a closed pipe to report, never a panic: clap's generators
//! panic on a failed write.

mod completions;
mod man;

use std::io::{self, Write as _};

use clap::CommandFactory as _;

use crate::{
    cli::{Cli, Generate},
    error::{Exit, Failure},
};

pub fn run(what: &Generate) -> Result<Exit, Failure> {
    let command = Cli::command();
    let text = match what {
        Generate::Man => man::page(command)
            .map_err(|e| Failure::failed(format!("cannot render the man page: {e}")))?,
        Generate::Completions { shell } => completions::script(*shell, command),
    };
    write_out(&text)
}

/// Writes `text` to stdout. A reader that closed the pipe has all it
/// wanted: that is a success, as it is for `cat`.
fn write_out(text: &[u8]) -> Result<Exit, Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => Ok(Exit::Success),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        Err(e) => Err(Failure::failed(format!("cannot write to stdout: {e}"))),
    }
}
