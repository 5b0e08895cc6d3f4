//! A service's processes as a tree, from its `PIDs` and each process's
//! parent and name in `/proc`.

use std::collections::{BTreeMap, BTreeSet};

/// What `/proc` says of one process: its parent and its command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub parent: u32,
    pub name: String,
}

/// Reads `/proc/PID/stat`; `None` once the process is gone.
pub fn read_process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (NAME) STATE PPID …": the name may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let parent = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Process { parent, name })
}

/// One line per process, each indented under its parent when the parent is
/// a member too: "1234 nginx" then "  1235 nginx".
pub fn render(pids: &[u32], read: impl Fn(u32) -> Option<Process>) -> String {
    let members: BTreeSet<u32> = pids.iter().copied().collect();
    let known: BTreeMap<u32, Option<Process>> =
        members.iter().map(|&pid| (pid, read(pid))).collect();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (&pid, process) in &known {
        match process {
            Some(process) if members.contains(&process.parent) && process.parent != pid => {
                children.entry(process.parent).or_default().push(pid);
            }
            _ => roots.push(pid),
        }
    }
    let mut lines = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(u32, usize)> = roots.into_iter().rev().map(|pid| (pid, 0)).collect();
    while let Some((pid, depth)) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let name = known
            .get(&pid)
            .and_then(|process| process.as_ref())
            .map_or("(gone)", |process| process.name.as_str());
        lines.push(format!("{}{pid} {name}", "  ".repeat(depth)));
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().rev().map(|&kid| (kid, depth + 1)));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(parent: u32, name: &str) -> Option<Process> {
        Some(Process {
            parent,
            name: name.to_owned(),
        })
    }

    #[test]
    fn workers_are_indented_under_their_master() {
        let read = |pid| match pid {
            10 => process(1, "nginx"),
            11 | 12 => process(10, "nginx"),
            20 => process(1, "helper"),
            _ => None,
        };
        assert_eq!(
            render(&[12, 20, 10, 11], read),
            "10 nginx\n  11 nginx\n  12 nginx\n20 helper"
        );
    }

    #[test]
    fn a_process_gone_meanwhile_is_said_so() {
        assert_eq!(render(&[5], |_| None), "5 (gone)");
    }

    #[test]
    fn this_process_reads_from_proc() {
        let me = read_process(std::process::id()).unwrap();
        assert!(!me.name.is_empty());
    }
}
