//! The one pattern language of `mcp.allowed_commands` arguments, `mcp.allowed_env` and
//! `mcp.inherit_env`: `*` stands for any run of ASCII letters, digits, `.`, `_` and `-`, every
//! other character for itself.
//!
//! A narrow `*` on purpose: in `@modelcontextprotocol/*` it must not reach another directory
//! (`/`), another package through a version spec (`x@npm:other`, `x@github:…`), an option's
//! value (`--flag=…`) or a URL (`:`).

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
                next[j] = matched[j] || (next[j - 1] && is_wildcard_byte(text[j - 1]));
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

/// What a `*` may stand for.
fn is_wildcard_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Whether `pattern` holds a `*` (an exact name or argument holds none).
pub(super) fn is_wildcard(pattern: &str) -> bool {
    pattern.contains('*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn a_star_matches_a_run_of_name_characters_only() {
        for other_package in ["x@npm:evil", "x@github:evil/x", "x@file:evil.tgz", "x y"] {
            let arg = format!("@modelcontextprotocol/{other_package}");
            assert!(!matches("@modelcontextprotocol/*", &arg), "{arg}");
        }
        assert!(matches("@scope/*", "@scope/server-fs.v2_1"));
        assert!(!matches("--root=*", "--root=/etc"));
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
