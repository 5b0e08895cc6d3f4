//! Shell completions: clap_complete's script for verbs and options, and
//! for bash, zsh and fish the service names, which only adoptd knows: the
//! scripts ask it with the hidden `adoptctl list --names`.

use clap_complete::Shell;

/// The completion script for `shell`.
pub fn script(shell: Shell, mut command: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "adoptctl", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    let script = match shell {
        Shell::Bash => script + include_str!("services.bash"),
        Shell::Fish => script + include_str!("services.fish"),
        Shell::Zsh => zsh_with_services(&script),
        _ => script,
    };
    script.into_bytes()
}

/// The zsh script with each service-name argument completed by
/// `_adoptctl_services`, defined before the script first runs `_adoptctl`.
fn zsh_with_services(script: &str) -> String {
    const LAST: &str = "if [ \"$funcstack[1]\" = \"_adoptctl\" ]; then";
    let mut out = String::with_capacity(script.len() + 1024);
    for line in script.split_inclusive('\n') {
        if line.starts_with(LAST) {
            out.push_str(include_str!("services.zsh"));
        }
        match line.strip_prefix("'*::names -- ") {
            Some(rest) if rest.trim_end().ends_with(":_default' \\") => {
                out.push_str(&line.replacen(":_default' \\", ":_adoptctl_services' \\", 1));
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn zsh_completes_every_name_argument_with_the_service_names() {
        let text = String::from_utf8(script(Shell::Zsh, Cli::command())).unwrap_or_default();
        let names = text.matches("'*::names -- ").count();
        assert_eq!(
            names, 12,
            "status start stop restart reload kill monitor is-active is-failed show cat reset-failed"
        );
        assert_eq!(text.matches(":_adoptctl_services' \\").count(), names);
        let defined = text.find("_adoptctl_services() {");
        let called = text.rfind("_adoptctl \"$@\"");
        assert!(defined < called && defined.is_some(), "{text}");
    }
}
