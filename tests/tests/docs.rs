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

/// Every file and directory docs/ARCHITECTURE.md names (a backticked token
/// ending in `/` or a file extension) exists: in the repository, or under
/// the crate whose section (`### \`crate/\``) names it. A token with a
/// slash must match the end of a real path, not just its file name.
#[test]
fn architecture_map_names_only_paths_that_exist() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let listed = std::process::Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .unwrap();
    let files: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Every tracked file and every directory above one, dirs ending in '/'.
    let mut paths: Vec<String> = Vec::new();
    for file in &files {
        let mut prefix = String::new();
        for part in file.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            prefix.push_str(part);
            prefix.push('/');
            paths.push(prefix.clone());
        }
        paths.push(file.clone());
    }
    let is_path = |token: &str| {
        let plain = token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        let shaped = token.ends_with('/')
            || [".rs", ".md", ".toml", ".sh", ".json", ".py"]
                .iter()
                .any(|ext| token.ends_with(ext));
        plain && shaped && !token.starts_with('/')
    };
    let mut section = String::new();
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            section = heading.split('`').next().unwrap_or("").to_owned();
            continue;
        }
        if line.starts_with("## ") {
            section.clear();
        }
        for token in line.split('`').skip(1).step_by(2).filter(|t| is_path(t)) {
            checked += 1;
            let found = paths.iter().any(|path| {
                let in_scope = section.is_empty() || path.starts_with(&section);
                in_scope && (path == token || path.ends_with(&format!("/{token}")))
            }) || paths.iter().any(|path| path == token);
            if !found {
                missing.push(format!("{token} (section {section:?})"));
            }
        }
    }
    assert!(checked > 50, "too few paths found: {checked}");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:#?}"
    );
}
