//! The names tools get where a model or an MCP client sees them: `server__tool`, made safe for
//! every provider (`[A-Za-z0-9_-]`, at most 64 characters, OpenAI's limit), and mapped back
//! through the catalog — never by splitting the name, since server and tool names may themselves
//! hold `__`.

use std::collections::HashMap;

use super::hub::CatalogTool;

/// Between the server's and the tool's name.
pub const SEPARATOR: &str = "__";
/// The longest name every provider accepts.
const MAX_LEN: usize = 64;

/// `server__tool` when that is already safe; otherwise the safe characters, cut to fit, and a
/// hash of the real name so that two tools never end up with the same name.
pub fn exposed_name(server: &str, tool: &str) -> String {
    let raw = format!("{server}{SEPARATOR}{tool}");
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == raw && safe.len() <= MAX_LEN {
        return safe;
    }
    with_hash(&safe, &raw)
}

/// `stem` cut to leave room for `_` and 8 hex digits of a stable hash of `key`.
fn with_hash(stem: &str, key: &str) -> String {
    let keep = MAX_LEN - 9;
    // `stem` is ASCII, so any byte index is a character boundary.
    let stem = &stem[..stem.len().min(keep)];
    format!("{stem}_{:08x}", fnv1a(key))
}

/// 32-bit FNV-1a: stable across Rust versions and runs, unlike the standard hasher, because
/// names are stored in session histories and cached by clients.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The exposed names of a catalog, both ways.
#[derive(Debug, Default, Clone)]
pub struct ToolNames {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl ToolNames {
    /// Names for `tools`, in order. Two tools whose names collide (`a__b` + `c` and `a` +
    /// `b__c`) are told apart by a hash on the later one.
    pub fn new(tools: &[CatalogTool]) -> Self {
        Self::of(tools.iter().map(|t| (t.server.as_str(), t.name.as_str())))
    }

    /// Names for `(server, tool)` pairs, in order, the same as [`new`](Self::new) gives.
    pub fn of<'a>(tools: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut names = Vec::with_capacity(tools.len());
        let mut index = HashMap::with_capacity(tools.len());
        for (position, (server, tool)) in tools.enumerate() {
            let mut name = exposed_name(server, tool);
            if index.contains_key(&name) {
                name = with_hash(&name, &format!("{server}\0{tool}"));
            }
            index.insert(name.clone(), position);
            names.push(name);
        }
        Self { names, index }
    }

    /// The exposed name of the tool at `position` of the catalog.
    pub fn name(&self, position: usize) -> Option<&str> {
        self.names.get(position).map(String::as_str)
    }

    /// Where the tool exposed as `name` is in the catalog.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tool(server: &str, name: &str) -> CatalogTool {
        CatalogTool {
            name: name.to_owned(),
            description: String::new(),
            server: server.to_owned(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }

    fn provider_safe(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn plain_names_are_server_and_tool_joined() {
        assert_eq!(exposed_name("everything", "echo"), "everything__echo");
        assert_eq!(exposed_name("my-fs", "read_file"), "my-fs__read_file");
    }

    #[test]
    fn unsafe_or_long_names_become_safe_and_stay_distinct() {
        let dotted = exposed_name("web", "fetch.v2");
        let underscored = exposed_name("web", "fetch_v2");
        assert!(provider_safe(&dotted), "{dotted}");
        assert_eq!(underscored, "web__fetch_v2");
        assert_ne!(dotted, underscored);
        let long = exposed_name("server", &"t".repeat(200));
        let longer = exposed_name("server", &"t".repeat(201));
        assert!(provider_safe(&long) && provider_safe(&longer));
        assert_ne!(long, longer);
        assert!(provider_safe(&exposed_name("s", "ünïcode/tool name")));
        // Stable: stored histories and clients rely on it.
        assert_eq!(exposed_name("web", "fetch.v2"), dotted);
    }

    #[test]
    fn names_map_back_to_their_tool_even_when_they_collide() {
        let tools = [
            tool("a__b", "c"),
            tool("a", "b__c"),
            tool("web", "fetch.v2"),
            tool("x", "y"),
        ];
        let names = ToolNames::new(&tools);
        let exposed: Vec<&str> = (0..tools.len()).map(|i| names.name(i).unwrap()).collect();
        assert_eq!(exposed[0], "a__b__c");
        assert_ne!(exposed[1], exposed[0]);
        for (position, name) in exposed.iter().enumerate() {
            assert!(provider_safe(name), "{name}");
            assert_eq!(names.find(name), Some(position), "{name}");
        }
        assert_eq!(names.find("web.fetch.v2"), None);
        assert_eq!(names.find("nope"), None);
    }
}
