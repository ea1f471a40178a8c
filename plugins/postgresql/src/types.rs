//! Naming and shaping result columns, resolving types that are not
//! built in (domains, enums, arrays of them) once per instance.

use serde_json::{json, Value};

use crate::values::{builtin, static_shape, Shape, TypeCache, TypeInfo};
use crate::wire::{Column, Connection};

const LOOKUP_SQL: &str = "SELECT t.oid::int8::text, t.typname::text, t.typtype::text, \
     t.typbasetype::int8::text, t.typelem::int8::text, t.typcategory::text \
     FROM pg_catalog.pg_type t WHERE t.oid = ANY($1::oid[])";

fn shape_of_builtin(oid: u32) -> Shape {
    builtin(oid).map_or(Shape::Text, |(_, shape)| shape)
}

/// Fills the cache for any column type it does not know yet (one query,
/// as the service account; pg_type is public).
pub fn resolve(cache: &TypeCache, connection: &mut Connection, columns: &[Column]) {
    let mut unknown: Vec<u32> = columns
        .iter()
        .map(|c| c.type_oid)
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
    let Ok(result) = connection.query_params(LOOKUP_SQL, &[Some(&list)]) else {
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

/// Column names, shapes, and the `columns` JSON of a result.
pub fn describe(cache: &TypeCache, columns: &[Column]) -> (Vec<String>, Vec<Shape>, Value) {
    let mut names = Vec::with_capacity(columns.len());
    let mut shapes = Vec::with_capacity(columns.len());
    let mut described = Vec::with_capacity(columns.len());
    for column in columns {
        let info = cache.get(column.type_oid).unwrap_or(TypeInfo {
            name: format!("oid:{}", column.type_oid),
            shape: Shape::Text,
        });
        described.push(json!({"name": column.name, "type": info.name}));
        names.push(column.name.clone());
        shapes.push(info.shape);
    }
    (names, shapes, Value::Array(described))
}
