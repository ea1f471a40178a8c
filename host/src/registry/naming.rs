//! Which plugin serves a module entry, and what its tools are called. The
//! rules are the seed framework's: entries whose key starts with a kind
//! belong to it, and the kind in the key is replaced by the plugin's default
//! prefix (`postgresql2` → `sql2`).

/// The kind serving entry `name`: its explicit `type`, else the longest
/// known kind the name starts with.
pub fn resolve_kind<'a>(
    name: &str,
    explicit: Option<&str>,
    known_kinds: impl Iterator<Item = &'a str>,
) -> Option<String> {
    if let Some(kind) = explicit {
        return Some(kind.to_owned());
    }
    known_kinds
        .filter(|kind| name.starts_with(kind))
        .max_by_key(|kind| kind.len())
        .map(str::to_owned)
}

/// `toolPrefix` if set; else the entry name with its kind replaced by the
/// plugin's default prefix; else (a `type`d entry with another name) the name.
pub fn tool_prefix(name: &str, kind: &str, default_prefix: &str, explicit: Option<&str>) -> String {
    if let Some(prefix) = explicit {
        return prefix.to_owned();
    }
    match name.strip_prefix(kind) {
        Some(rest) => format!("{default_prefix}{rest}"),
        None => name.to_owned(),
    }
}

/// The exposed name of a module's tool.
pub fn tool_name(prefix: &str, tool: &str) -> String {
    format!("{prefix}-{tool}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_naming_rules() {
        let kinds = ["postgresql", "echo"];
        let kind = |name: &str, explicit| resolve_kind(name, explicit, kinds.iter().copied());
        assert_eq!(kind("postgresql", None).as_deref(), Some("postgresql"));
        assert_eq!(kind("postgresql12", None).as_deref(), Some("postgresql"));
        assert_eq!(
            kind("primary", Some("postgresql")).as_deref(),
            Some("postgresql")
        );
        assert_eq!(kind("mysql1", None), None);
        assert_eq!(tool_prefix("postgresql", "postgresql", "sql", None), "sql");
        assert_eq!(
            tool_prefix("postgresql2", "postgresql", "sql", None),
            "sql2"
        );
        assert_eq!(tool_prefix("primary", "postgresql", "sql", None), "primary");
        assert_eq!(
            tool_prefix("postgresql1", "postgresql", "sql", Some("primary-db")),
            "primary-db"
        );
        assert_eq!(tool_name("sql1", "table-details"), "sql1-table-details");
    }
}
