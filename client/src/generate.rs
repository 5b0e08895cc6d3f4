//! `adoptctl generate`: the man pages and shell completions, made from
//! the same clap definition as `--help`.

use std::io::Write as _;

use clap::CommandFactory as _;

use crate::{
    cli::{Cli, Generate},
    error::{Exit, Failure},
};

pub fn run(what: &Generate) -> Result<Exit, Failure> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generate::Man => clap_mangen::Man::new(command).render(&mut out),
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut command, "adoptctl", &mut out);
            Ok(())
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))?;
    Ok(Exit::Success)
}
