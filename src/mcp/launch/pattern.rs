//! The one pattern language of `mcp.allowed_commands` arguments, `mcp.allowed_env` and
//! `mcp.inherit_env`: `*` stands for any run of characters other than `/`, every other
//! character for itself.

/// Whether `text` matches `pattern` as a whole.
///
/// Dynamic programming over the two strings, so a pattern of many `*` costs
/// `pattern.len() × text.len()` steps at most (both are bounded by the config and request
/// limits), never an exponential backtrack. Works on bytes: `*` and `/` are ASCII, and the
/// other bytes of a UTF-8 string are compared exactly.
pub(super) fn matches(pattern: &str, text: &str) -> bool {
    let text = text.as_bytes();
    // matched[j]: the pattern read so far matches text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for &p in pattern.as_bytes() {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            next[0] = matched[0];
            for j in 1..=text.len() {
                next[j] = matched[j] || (next[j - 1] && text[j - 1] != b'/');
            }
        } else {
            for j in 1..=text.len() {
                next[j] = matched[j - 1] && text[j - 1] == p;
            }
        }
        matched = next;
    }
    matched[text.len()]
}

/// Whether `pattern` holds a `*` (an exact name or argument holds none).
pub(super) fn is_wildcard(pattern: &str) -> bool {
    pattern.contains('*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn a_star_matches_any_run_within_one_path_segment() {
        assert!(matches(
            "@modelcontextprotocol/*",
            "@modelcontextprotocol/server-fs"
        ));
        assert!(matches("@modelcontextprotocol/*", "@modelcontextprotocol/"));
        assert!(!matches(
            "@modelcontextprotocol/*",
            "@modelcontextprotocol/a/b"
        ));
        assert!(!matches("@modelcontextprotocol/*", "@evil/server"));
        assert!(matches("MY_*", "MY_TOKEN"));
        assert!(matches("*_TOKEN", "GITHUB_TOKEN"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn without_a_star_only_the_same_text_matches() {
        assert!(matches("-y", "-y"));
        assert!(!matches("-y", "-yes"));
        assert!(!matches("-y", ""));
        assert!(matches("", ""));
        assert!(matches("*", ""));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(200);
        let text = "a".repeat(199);
        assert!(!matches(&pattern, &text));
    }
}
