//! Reading mapped claims and turning IdP roles into server roles.

use serde_json::{Map, Value};

use crate::config::auth::RoleMappings;

/// The primary server roles, most privileged first.
pub const PRIMARY_ROLES: &[&str] = &["admin", "user", "guest"];

/// A claim by exact name first (URIs contain dots), else by dotted path
/// (`realm_access.roles`).
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

pub fn string_claim(claims: &Map<String, Value>, path: &str) -> Option<String> {
    match lookup(claims, path)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// An array of strings, or one space-separated string (`scope`).
pub fn list_claim(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match lookup(claims, path) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Server roles granted by an IdP's role names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRoles {
    /// `admin`, `user` or `guest` (or the mapping's `defaultRole`).
    pub primary: String,
    /// Other granted mapping keys (`analyst`, `sql-read`, …), sorted.
    pub custom: Vec<String>,
}

/// `None`: nothing mapped and the IdP says `rejectUnmappedRoles`.
pub fn map_roles(raw: &[String], mappings: Option<&RoleMappings>) -> Option<MappedRoles> {
    let granted: Vec<String> = match mappings {
        // No mappings: role names are taken as they are.
        None => raw.to_vec(),
        Some(mappings) => mappings
            .grants
            .iter()
            .filter(|(_, idp_roles)| idp_roles.iter().any(|role| raw.contains(role)))
            .map(|(key, _)| key.clone())
            .collect(),
    };
    if granted.is_empty() && mappings.is_some_and(|m| m.reject_unmapped_roles) {
        return None;
    }
    let primary = PRIMARY_ROLES
        .iter()
        .find(|role| granted.iter().any(|g| g == *role))
        .map(|role| (*role).to_owned())
        .or_else(|| mappings.and_then(|m| m.default_role.clone()))
        .unwrap_or_else(|| "guest".to_owned());
    let mut custom: Vec<String> = granted
        .into_iter()
        .filter(|role| !PRIMARY_ROLES.contains(&role.as_str()))
        .collect();
    custom.sort();
    custom.dedup();
    Some(MappedRoles { primary, custom })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mappings(value: Value) -> RoleMappings {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn dotted_paths_and_lists() {
        let claims =
            json!({"realm_access": {"roles": ["a", "b"]}, "scope": "x y", "https://e.com/r": "z"});
        let claims = claims.as_object().unwrap();
        assert_eq!(list_claim(claims, "realm_access.roles"), ["a", "b"]);
        assert_eq!(list_claim(claims, "scope"), ["x", "y"]);
        assert_eq!(
            string_claim(claims, "https://e.com/r").as_deref(),
            Some("z")
        );
    }

    #[test]
    fn role_mapping_keeps_primary_and_custom_roles() {
        let m = mappings(
            json!({"admin": ["db-admin"], "user": ["db-user"], "analyst": ["data-analyst"]}),
        );
        let roles = map_roles(&["db-user".into(), "data-analyst".into()], Some(&m)).unwrap();
        assert_eq!(roles.primary, "user");
        assert_eq!(roles.custom, ["analyst"]);
        let roles = map_roles(&["nothing".into()], Some(&m)).unwrap();
        assert_eq!(roles.primary, "guest");
        let strict = mappings(
            json!({"user": ["db-user"], "rejectUnmappedRoles": true, "defaultRole": "guest"}),
        );
        assert_eq!(map_roles(&["nothing".into()], Some(&strict)), None);
        let defaulted = mappings(json!({"user": ["db-user"], "defaultRole": "user"}));
        assert_eq!(map_roles(&[], Some(&defaulted)).unwrap().primary, "user");
    }
}
