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
