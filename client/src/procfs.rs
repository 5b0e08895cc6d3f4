//! What /proc says about a service's processes: names, command lines and
//! parents, for the status block. Reading is best effort: a process may be
//! gone by the time it is read, or hidden from this user.

use std::collections::BTreeMap;

/// A process's short name (`comm`), or `None` if it cannot be read.
pub fn name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// A process's command line, its arguments joined by spaces; its name in
/// brackets for a process without one (a kernel thread or a zombie).
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&byte| byte == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    if words.is_empty() {
        return name(pid).map(|name| format!("[{name}]"));
    }
    Some(words.join(" "))
}

/// A process's parent, or `None` if it cannot be read.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// One line of a process tree: its depth, whether it is the last child of
/// its parent at each depth, and the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLine {
    /// For each ancestor level and this one: whether that node was the
    /// last among its siblings (which decides `├─` or `└─`, `│ ` or `  `).
    pub last: Vec<bool>,
    pub pid: u32,
}

/// Arranges `pids` as a forest by parent (`parent_of`), roots and children
/// in pid order.
pub fn tree(pids: &[u32], parent_of: impl Fn(u32) -> Option<u32>) -> Vec<TreeLine> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut roots = Vec::new();
    let mut sorted = pids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &pid in &sorted {
        match parent_of(pid).filter(|parent| *parent != pid && sorted.contains(parent)) {
            Some(parent) => children.entry(parent).or_default().push(pid),
            None => roots.push(pid),
        }
    }
    let mut lines = Vec::with_capacity(sorted.len());
    let mut stack: Vec<(u32, Vec<bool>)> = Vec::new();
    for (index, &root) in roots.iter().enumerate().rev() {
        stack.push((root, vec![index + 1 == roots.len()]));
    }
    while let Some((pid, last)) = stack.pop() {
        if lines.len() == sorted.len() {
            break; // a cycle in racy /proc data cannot loop forever
        }
        if let Some(kids) = children.get(&pid) {
            for (index, &kid) in kids.iter().enumerate().rev() {
                let mut kid_last = last.clone();
                kid_last.push(index + 1 == kids.len());
                stack.push((kid, kid_last));
            }
        }
        lines.push(TreeLine { last, pid });
    }
    lines
}

/// The drawing in front of a tree line: `├─`, `└─`, indented by `│ ` or
/// two spaces per ancestor.
pub fn branches(line: &TreeLine) -> String {
    let mut text = String::new();
    if let Some((this, ancestors)) = line.last.split_last() {
        for &ancestor_last in ancestors {
            text.push_str(if ancestor_last { "  " } else { "│ " });
        }
        text.push_str(if *this { "└─" } else { "├─" });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(name(pid).is_some());
        assert!(command_line(pid).is_some());
        assert_eq!(parent(pid), Some(nix::unistd::getppid().as_raw() as u32));
    }

    #[test]
    fn a_master_and_workers_draw_as_a_tree() {
        let parents = |pid| match pid {
            10 => Some(1),
            11 | 12 => Some(10),
            13 => Some(12),
            20 => Some(1),
            _ => None,
        };
        let drawn: Vec<String> = tree(&[13, 20, 11, 10, 12], parents)
            .iter()
            .map(|line| format!("{}{}", branches(line), line.pid))
            .collect();
        assert_eq!(drawn, ["├─10", "│ ├─11", "│ └─12", "│   └─13", "└─20"]);
    }

    #[test]
    fn unreadable_parents_make_roots() {
        let drawn: Vec<String> = tree(&[5, 6], |_| None)
            .iter()
            .map(|line| format!("{}{}", branches(line), line.pid))
            .collect();
        assert_eq!(drawn, ["├─5", "└─6"]);
    }
}
