//! Documentation that mirrors code must not drift from it.

use mcp_delegate_tests::paths::workspace_root;

#[test]
fn error_code_doc_lists_exactly_the_codes_in_code() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/error-codes.md")).unwrap();
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let mut in_code: Vec<&str> = mcp_delegate_plugin_api::codes::ALL.to_vec();
    let mut sorted_doc = documented.clone();
    in_code.sort_unstable();
    sorted_doc.sort_unstable();
    assert_eq!(sorted_doc, in_code);
}

/// Config keys declared in a source file: `pub field:` lines of the serde
/// structs, renamed by a preceding `rename = "…"` or camelCased.
fn code_keys(source: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rename: Option<String> = None;
    let mut flatten = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[serde(") {
            if let Some(start) = line.find("rename = \"") {
                let rest = &line[start + 10..];
                rename = rest.split('"').next().map(str::to_owned);
            }
            flatten |= line.contains("flatten");
            continue;
        }
        if let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split(':').next()) {
            let is_field = field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && line.contains(':')
                && !line.contains('(');
            if is_field && !flatten {
                keys.push(rename.take().unwrap_or_else(|| camel_case(field)));
            }
        }
        if !line.starts_with("///") {
            rename = None;
            flatten = false;
        }
    }
    keys
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn configuration_doc_and_code_list_the_same_keys() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|key| !key.starts_with("--"))
        .map(|path| {
            path.rsplit('.')
                .next()
                .unwrap_or(path)
                .trim_end_matches("[]")
                .to_owned()
        })
        .collect();
    let mut in_code = std::collections::BTreeSet::new();
    assert!(documented.len() > 60, "{documented:?}");
    for file in [
        "host/src/config/model.rs",
        "host/src/config/auth.rs",
        "plugins/postgresql/src/config.rs",
    ] {
        in_code.extend(code_keys(
            &std::fs::read_to_string(root.join(file)).unwrap(),
        ));
    }
    let undocumented: Vec<_> = in_code.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "keys in code but not in docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&in_code).collect();
    assert!(
        unknown.is_empty(),
        "keys in docs/configuration.md but not in code: {unknown:?}"
    );
}
