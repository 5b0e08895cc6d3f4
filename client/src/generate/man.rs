//! adoptctl(1): clap_mangen's title, synopsis, description and global
//! options, then one section with every command and its arguments, the
//! exit status, the environment and the pages to see also.
//!
//! clap_mangen's own subcommand section points at a page per subcommand
//! (adoptctl-status(1), …), which adoptctl does not have: every command
//! is described here, in the one page.

use std::fmt::Write as _;

use clap::{Arg, Command};

/// The page, in roff.
pub fn page(mut command: Command) -> std::io::Result<Vec<u8>> {
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut text = String::from_utf8_lossy(&page).into_owned();
    text.push_str(".SH COMMANDS\n");
    for sub in visible_subcommands(&command) {
        commands_entry(&mut text, sub, "adoptctl");
    }
    text.push_str(EXTRA_SECTIONS);
    let mut version = Vec::new();
    man.render_version_section(&mut version)?;
    text.push_str(&String::from_utf8_lossy(&version));
    Ok(single_preamble(&text).into_bytes())
}

/// The sections that are not in clap's definition.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success; for \fBstatus\fR: every named service is running.
.TP
.B 1
Failure: adoptd could not be reached, refused, or a command did not get
there.
.TP
.B 2
A usage error, also an invalid service name or signal.
.TP
.B 3
A named service is not running (\fBstatus\fR).
.TP
.B 4
No such service, or a glob that matches nothing.
.PP
With several names, the highest status wins.
.SH ENVIRONMENT
.TP
.B ADOPTD_BUS_ADDRESS
The bus adoptd is on, as \fBadoptd \-\-private\-bus\fR prints it; used
when neither \fB\-\-address\fR, \fB\-\-system\fR nor \fB\-\-session\fR
is given.
.TP
.B ADOPTD_RUNTIME_DIR
Where the private bus socket is (\fI$ADOPTD_RUNTIME_DIR/bus\fR) when no
bus is named and adoptd is not on the system bus.
.TP
.B NO_COLOR
When set, no colour, even on a terminal.
.SH EXAMPLES
.nf
adoptctl status web || adoptctl restart web
adoptctl \-\-json list | jq \-r '.[] | select(.State != "running") | .Name'
adoptctl monitor 'apache2@*'
adoptctl generate completions bash > /usr/share/bash\-completion/completions/adoptctl
.fi
.SH "SEE ALSO"
.BR adoptd (8),
.BR adoptd\-service (5),
.BR busctl (1)
"#;

fn visible_subcommands(command: &Command) -> impl Iterator<Item = &Command> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
}

/// One `.TP` entry for `sub` and its arguments, then its own subcommands.
fn commands_entry(text: &mut String, sub: &Command, parent: &str) {
    let name = format!("{parent} {}", sub.get_name());
    let mut usage = format!("\\fB{}\\fR", escape(&name));
    for arg in own_arguments(sub) {
        usage.push(' ');
        usage.push_str(&arg_usage(arg));
    }
    let _ = writeln!(text, ".TP\n{usage}");
    let about = sub
        .get_long_about()
        .or_else(|| sub.get_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    paragraphs(text, &about);
    for arg in own_arguments(sub) {
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let _ = writeln!(
            text,
            ".RS\n.TP\n{}",
            arg_usage(arg).trim_matches(['[', ']'])
        );
        paragraphs(text, &help);
        let default = arg.get_default_values().first();
        if let Some(default) = default.filter(|_| arg.get_action().takes_values()) {
            let _ = writeln!(
                text,
                ".br\nDefault: \\fB{}\\fR.",
                escape(&default.to_string_lossy())
            );
        }
        text.push_str(".RE\n");
    }
    for nested in visible_subcommands(sub) {
        commands_entry(text, nested, &name);
    }
}

/// The arguments of `sub` that are its own: not the global ones (in
/// OPTIONS), not --help, not hidden.
fn own_arguments(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|arg| {
        !arg.is_global_set()
            && !arg.is_hide_set()
            && !matches!(arg.get_id().as_str(), "help" | "version")
    })
}

/// `--signal SIG`, `-s`, `[NAME]…` as the synopsis of an argument.
fn arg_usage(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map_or_else(
            || arg.get_id().to_string().to_uppercase(),
            ToString::to_string,
        );
    if let Some(long) = arg.get_long() {
        let flag = match arg.get_short() {
            Some(short) => format!("\\fB\\-{short}\\fR, \\fB\\-\\-{}\\fR", escape(long)),
            None => format!("\\fB\\-\\-{}\\fR", escape(long)),
        };
        let usage = if arg.get_action().takes_values() {
            format!("{flag} \\fI{}\\fR", escape(&value))
        } else {
            flag
        };
        if arg.is_required_set() {
            usage
        } else {
            format!("[{usage}]")
        }
    } else {
        let many = matches!(arg.get_num_args(), Some(range) if range.max_values() > 1);
        let value = format!(
            "\\fI{}\\fR{}",
            escape(&value),
            if many { "\\&..." } else { "" }
        );
        if arg.is_required_set() {
            value
        } else {
            format!("[{value}]")
        }
    }
}

/// `text` as roff paragraphs: its blank-line-separated parts.
fn paragraphs(text: &mut String, prose: &str) {
    for (index, paragraph) in prose.split("\n\n").enumerate() {
        if index > 0 {
            text.push_str(".IP\n");
        }
        for line in paragraph.lines() {
            let line = escape(line.trim());
            if line.starts_with(['.', '\'']) {
                text.push_str("\\&");
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
}

/// Text made safe for roff: backslashes and hyphens escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// clap_mangen starts each rendered section with the same two preamble
/// lines; one is enough.
fn single_preamble(text: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    text.split_inclusive('\n')
        .filter(|line| {
            !line.starts_with(".ie \\n(.g .ds Aq") && !line.starts_with(".el .ds Aq")
                || seen.insert(*line)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::Cli;

    fn text() -> String {
        String::from_utf8(page(Cli::command()).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn every_command_and_its_arguments_are_on_the_one_page() {
        let text = text();
        for command in [
            "status", "list", "start", "stop", "restart", "reload", "kill", "monitor", "generate",
        ] {
            assert!(
                text.contains(&format!("\\fBadoptctl {command}\\fR")),
                "{command}: {text}"
            );
        }
        assert!(text.contains("\\fBadoptctl generate completions\\fR"));
        assert!(text.contains("\\fB\\-s\\fR, \\fB\\-\\-signal\\fR \\fISIG\\fR"));
        assert!(text.contains("\\fB\\-\\-no\\-block\\fR"));
        assert!(!text.contains("adoptctl\\-status"), "{text}");
        assert_eq!(text.matches(".ie \\n(.g .ds Aq").count(), 1);
        assert!(text.contains(".SH \"EXIT STATUS\""));
    }
}
