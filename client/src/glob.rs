//! Shell-style patterns for service names: `*`, `?` and `[…]` (with
//! ranges and `!` or `^` for negation), as `systemctl` accepts them.

/// Whether `pattern` has any wildcard, i.e. may select several services.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    // Iterative with one backtracking point per `*`, so that a pattern of
    // many stars stays linear-ish instead of exponential.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some('[') => {
                if let Some((matched, next)) = class(&pattern[p..], name[n]) {
                    if matched {
                        p += next;
                        n += 1;
                        continue;
                    }
                } else if name[n] == '[' {
                    // An unclosed `[` is itself.
                    p += 1;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_p, star_n)) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class that `pattern` starts with (`[…]`):
/// whether it matched and the class's length, or `None` if unclosed.
fn class(pattern: &[char], c: char) -> Option<(bool, usize)> {
    let mut index = 1;
    let negated = matches!(pattern.get(index), Some('!' | '^'));
    if negated {
        index += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &start = pattern.get(index)?;
        if start == ']' && !first {
            return Some((matched != negated, index + 1));
        }
        first = false;
        if pattern.get(index + 1) == Some(&'-') && pattern.get(index + 2).is_some_and(|&e| e != ']')
        {
            let end = pattern[index + 2];
            matched |= (start..=end).contains(&c);
            index += 3;
        } else {
            matched |= start == c;
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_selects_every_instance_of_a_template() {
        assert!(matches("apache2@*", "apache2@chroot1"));
        assert!(matches("apache2@*", "apache2@"));
        assert!(!matches("apache2@*", "apache2"));
        assert!(!matches("apache2@*", "nginx@chroot1"));
    }

    #[test]
    fn a_plain_name_matches_only_itself() {
        assert!(matches("web", "web"));
        assert!(!matches("web", "web2"));
        assert!(!matches("web", "we"));
        assert!(!is_glob("apache2@chroot1"));
        assert!(is_glob("apache2@*"));
    }

    #[test]
    fn question_mark_and_classes() {
        assert!(matches("web?", "web1"));
        assert!(!matches("web?", "web"));
        assert!(matches("web[12]", "web2"));
        assert!(!matches("web[12]", "web3"));
        assert!(matches("web[0-9]", "web7"));
        assert!(matches("web[!0-9]", "webx"));
        assert!(!matches("web[!0-9]", "web7"));
        assert!(matches("web[]]", "web]"));
        assert!(matches("web[", "web["));
    }

    #[test]
    fn stars_anywhere_and_many() {
        assert!(matches("*@*", "a@b"));
        assert!(matches("*ch*1", "apache2@chroot1"));
        assert!(!matches("*ch*2", "apache2@chroot1"));
        assert!(matches("**", ""));
        let long = "a".repeat(200);
        assert!(!matches(&format!("{}b", "*a".repeat(50)), &long));
    }
}
