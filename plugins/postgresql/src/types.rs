//! Naming and shaping result columns, resolving types that are not
//! built in (domains, enums, arrays of them) once per instance.

use crate::values::{builtin, static_shape, Shape, TypeCache, TypeInfo};
use crate::wire::Connection;

fn shape_of_builtin(oid: u32) -> Shape {
    builtin(oid).map_or(Shape::Text, |(_, shape)| shape)
}

/// Fills the cache for the given type oids (one query, as the service
/// account; pg_type is public).
pub fn resolve(cache: &TypeCache, connection: &mut Connection, oids: &[u32]) {
    let mut unknown: Vec<u32> = oids
        .iter()
        .copied()
        .filter(|oid| cache.get(*oid).is_none())
        .collect();
    if unknown.is_empty() {
        return;
    }
    unknown.sort_unstable();
    unknown.dedup();
    let list = format!(
        "{{{}}}",
        unknown
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let Ok(result) =
        crate::service_query::with_params(connection, crate::sql::TYPE_LOOKUP, &[Some(&list)])
    else {
        return;
    };
    for row in result.rows {
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let number = |i: usize| field(i).parse::<u32>().unwrap_or(0);
        let shape = match (field(2).as_str(), field(5).as_str()) {
            ("d", _) => shape_of_builtin(number(3)),
            (_, "A") if number(4) != 0 => Shape::Array(static_shape(shape_of_builtin(number(4)))),
            _ => Shape::Text,
        };
        cache.insert(
            number(0),
            TypeInfo {
                name: field(1),
                shape,
            },
        );
    }
}
