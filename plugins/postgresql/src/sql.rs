//! Every statement this module itself sends, in one place.
//!
//! Each one names everything it uses with its schema: functions and
//! types as `pg_catalog.x`, operators as `OPERATOR(pg_catalog.=)`,
//! relations as `pg_catalog.pg_x`, and no construct that looks an operator
//! up by its bare name (`IN (…)`, simple `CASE x WHEN`, `LIKE`). The
//! guard runs in the caller's transaction after the caller's statement,
//! which may have created temporary objects: a temporary table named
//! `text` would otherwise turn `::text` into its row type (temporary
//! relations and types come first in the search path). A test walks the
//! parse tree of every statement here and fails on any unqualified name.

/// `BEGIN` of a read: the transaction is read-only whatever runs in it.
pub const BEGIN_READ: &str = "BEGIN READ ONLY";
pub const BEGIN_WRITE: &str = "BEGIN";
/// The statement that sets the role and the attribution, with more
/// settings appended.
macro_rules! set_role_sql {
    ($($more:expr),*) => {
        concat!(
            "SELECT pg_catalog.set_config('role', $1, true), \
             pg_catalog.set_config('mcp.subject', $2, true), \
             pg_catalog.set_config('mcp.client', $3, true), \
             pg_catalog.set_config('mcp.tool', $4, true), \
             pg_catalog.set_config('mcp.request_id', $5, true)"
            $(, $more)*
        )
    };
}
/// The transaction-local `SET ROLE`, the identity as a parameter, and the
/// caller's attribution as transaction-local settings that row-level
/// security policies, triggers and log lines can read (`mcp.subject`,
/// `mcp.client`, `mcp.tool`, `mcp.request_id`): all parameters, one
/// statement, no extra round trip. The role comes first, so the settings
/// are made as the delegated role (custom settings are user-settable).
pub const SET_ROLE: &str = set_role_sql!();
/// [`SET_ROLE`] plus the verified requestor claims as
/// `request.jwt.claims` (PostgREST's name), for `claimsSetting: true`.
pub const SET_ROLE_CLAIMS: &str =
    set_role_sql!(", pg_catalog.set_config('request.jwt.claims', $6, true)");
/// What a transaction-mode pooler's client sets in every transaction
/// instead of at start-up, after the role: every session default the
/// module relies on, with the statement timeout and the application name
/// as the parameters `$t` and `$a`. The pooler neither passes the
/// untracked ones on nor restores the ones it tracks after the DISCARD ALL
/// that ends each batch (seen with PgBouncer 1.18: the next transaction
/// on that server session had the server's DateStyle and no application
/// name), so nothing of the server session's own is trusted.
macro_rules! pooled_settings {
    ($t:literal, $a:literal) => {
        concat!(
            ", pg_catalog.set_config('statement_timeout', ",
            $t,
            ", true), pg_catalog.set_config('application_name', ",
            $a,
            ", true), \
             pg_catalog.set_config('DateStyle', 'ISO, YMD', true), \
             pg_catalog.set_config('TimeZone', 'UTC', true), \
             pg_catalog.set_config('IntervalStyle', 'iso_8601', true), \
             pg_catalog.set_config('extra_float_digits', '3', true), \
             pg_catalog.set_config('standard_conforming_strings', 'on', true)"
        )
    };
}
/// [`SET_ROLE`] behind a transaction-mode pooler (`wire::Pooling`): `$6`
/// the statement timeout, `$7` the application name.
pub const SET_ROLE_POOLED: &str = set_role_sql!(pooled_settings!("$6", "$7"));
/// [`SET_ROLE_CLAIMS`] behind a transaction-mode pooler: `$7` the
/// statement timeout, `$8` the application name.
pub const SET_ROLE_CLAIMS_POOLED: &str = set_role_sql!(
    ", pg_catalog.set_config('request.jwt.claims', $6, true)",
    pooled_settings!("$7", "$8")
);
/// The clean-up a server session shared through a transaction-mode pooler
/// gets before anything runs on it, committed in a transaction of its own:
/// everything a server session can carry over from an earlier transaction
/// put back to its default. A hostile statement can make the DISCARD ALL
/// at the end of its own call fail (a session `statement_timeout` of a few
/// milliseconds and a thousand temporary tables to drop), and the pooler
/// then hands the server session on as it is; found in review. In order:
/// the role and session user (a role left set would otherwise be who runs
/// the rest); every setting (`search_path`, the transaction defaults
/// `default_transaction_read_only`/`_isolation`/`_deferrable`, timeouts);
/// temporary objects (which would shadow the caller's tables); SQL-level
/// prepared statements; held cursors; sequence values (`lastval`); `LISTEN`;
/// session advisory locks. Committed, so that a read's ROLLBACK or a failed
/// batch cannot bring any of it back; and the transaction the call runs in
/// begins after it, so it takes the reset defaults.
macro_rules! pooled_cleanup {
    () => {
        "BEGIN; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; \
         DEALLOCATE ALL; CLOSE ALL; DISCARD SEQUENCES; UNLISTEN *; \
         SELECT pg_catalog.pg_advisory_unlock_all(); COMMIT; "
    };
}
/// How a read behind a transaction-mode pooler begins (one simple query:
/// one message, one parse): the clean-up, then the read's transaction. Its
/// ReadyForQuery says "in a transaction", so the pooler keeps the server
/// session ours.
pub const BEGIN_READ_POOLED: &str = concat!(pooled_cleanup!(), "BEGIN READ ONLY");
/// [`BEGIN_READ_POOLED`] for a write.
pub const BEGIN_WRITE_POOLED: &str = concat!(pooled_cleanup!(), "BEGIN");
/// The module's own queries as the service account behind a pooler begin
/// so too, with the module's statement timeout (milliseconds).
pub fn service_begin_pooled(statement_timeout_ms: &str) -> String {
    format!(
        concat!(
            pooled_cleanup!(),
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}"
        ),
        statement_timeout_ms
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    )
}
pub const ROLLBACK: &str = "ROLLBACK";
pub const COMMIT: &str = "COMMIT";
pub const DISCARD_ALL: &str = "DISCARD ALL";

/// After the caller's statement: fails (division by zero) unless the
/// identity is still the delegated one, counts SQL-level prepared
/// statements (a function can `EXECUTE 'PREPARE …'`), and releases
/// session-level advisory locks.
pub const GUARD: &str = "\
SELECT 1 OPERATOR(pg_catalog./) \
       (CURRENT_USER OPERATOR(pg_catalog.=) $1::pg_catalog.name)::pg_catalog.int4, \
       (pg_catalog.count(*) FILTER (WHERE p.from_sql))::pg_catalog.text, \
       pg_catalog.pg_advisory_unlock_all() \
FROM pg_catalog.pg_prepared_statement() p";

/// Whether a delegated identity may be used (as the service account):
/// no row when the role does not exist.
pub const IDENTITY: &str = "\
SELECT r.rolsuper::pg_catalog.text, r.rolbypassrls::pg_catalog.text, \
       r.rolcreaterole::pg_catalog.text, r.rolreplication::pg_catalog.text, \
       (r.rolname OPERATOR(pg_catalog.=) SESSION_USER)::pg_catalog.text, \
       pg_catalog.starts_with(r.rolname::pg_catalog.text, 'pg_')::pg_catalog.text, \
       pg_catalog.pg_has_role(SESSION_USER, r.oid, 'MEMBER')::pg_catalog.text \
FROM pg_catalog.pg_roles r \
WHERE r.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name";

/// The service account's attributes and how it holds the delegated roles
/// (the session user: a role left set on a pooled server session must not
/// be what is profiled),
/// with `$inherits` the condition under which a membership passes its
/// privileges on.
macro_rules! profile_sql {
    ($inherits:literal) => {
        concat!(
            "SELECT r.rolsuper::pg_catalog.text, r.rolbypassrls::pg_catalog.text, \
                    r.rolcreaterole::pg_catalog.text, r.rolreplication::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_auth_members m \
                      WHERE m.member OPERATOR(pg_catalog.=) r.oid AND ",
            $inherits,
            ")::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_auth_members m \
                      WHERE m.member OPERATOR(pg_catalog.=) r.oid AND m.admin_option)::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_auth_members m \
                      WHERE m.member OPERATOR(pg_catalog.=) r.oid)::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p, \
                           pg_catalog.aclexplode(COALESCE(p.proacl, \
                                                 pg_catalog.acldefault('f', p.proowner))) a \
                      WHERE p.oid OPERATOR(pg_catalog.=) \
                            'pg_catalog.set_config(text,text,boolean)'::pg_catalog.regprocedure \
                        AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE' \
                        AND a.grantee OPERATOR(pg_catalog.<>) r.oid \
                        AND a.grantee OPERATOR(pg_catalog.<>) p.proowner)::pg_catalog.text, \
                    pg_catalog.has_function_privilege(SESSION_USER, \
                                                      'pg_catalog.set_config(text,text,boolean)', \
                                                      'EXECUTE')::pg_catalog.text, \
                    (WITH RECURSIVE reach(oid) AS ( \
                       SELECT m.roleid FROM pg_catalog.pg_auth_members m \
                        WHERE m.member OPERATOR(pg_catalog.=) r.oid \
                       UNION \
                       SELECT m.roleid FROM pg_catalog.pg_auth_members m \
                       JOIN reach ON m.member OPERATOR(pg_catalog.=) reach.oid) \
                     SELECT pg_catalog.string_agg(x.rolname::pg_catalog.text, ', ' \
                                                  ORDER BY x.rolname) \
                     FROM reach JOIN pg_catalog.pg_roles x ON x.oid OPERATOR(pg_catalog.=) reach.oid \
                     WHERE x.rolsuper OR x.rolbypassrls OR x.rolcreaterole OR x.rolreplication \
                        OR pg_catalog.starts_with(x.rolname::pg_catalog.text, 'pg_')) \
             FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER"
        )
    };
}

/// The profile query for PostgreSQL 16 and later: grants carry INHERIT and
/// SET options.
pub const PROFILE_16: &str = profile_sql!("m.inherit_option");

/// The profile query before PostgreSQL 16: a member inherits every granted
/// role's privileges unless the member role is NOINHERIT.
pub const PROFILE_15: &str = profile_sql!("r.rolinherit");

/// Functions outside `pg_catalog` that take one argument (or more with
/// defaults, or variadic ones): what attribute notation can call
/// (`policy::catalog`).
pub const USER_FUNCTIONS: &str = "\
SELECT DISTINCT p.proname::pg_catalog.text, n.nspname::pg_catalog.text \
FROM pg_catalog.pg_proc p \
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
WHERE n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema}'::pg_catalog.name[]) \
  AND (p.pronargs OPERATOR(pg_catalog.-) p.pronargdefaults) OPERATOR(pg_catalog.<=) 1 \
  AND (p.pronargs OPERATOR(pg_catalog.>=) 1 OR p.provariadic OPERATOR(pg_catalog.<>) 0) \
ORDER BY 1, 2";

/// What `health` reports.
pub const HEALTH: &str = "\
SELECT pg_catalog.current_database()::pg_catalog.text, \
       pg_catalog.current_setting('server_version')";

/// Types that are not built in (domains, enums, their arrays), by oid.
pub const TYPE_LOOKUP: &str = "\
SELECT t.oid::pg_catalog.int8::pg_catalog.text, t.typname::pg_catalog.text, \
       t.typtype::pg_catalog.text, t.typbasetype::pg_catalog.int8::pg_catalog.text, \
       t.typelem::pg_catalog.int8::pg_catalog.text, t.typcategory::pg_catalog.text \
FROM pg_catalog.pg_type t \
WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])";

/// Tables, views, materialized views, foreign and partitioned tables the
/// role holds any privilege on, in a schema it may use (run delegated).
pub const SCHEMA: &str = "\
SELECT c.relname::pg_catalog.text,
       CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'r' THEN 'TABLE'
            WHEN c.relkind OPERATOR(pg_catalog.=) 'v' THEN 'VIEW'
            WHEN c.relkind OPERATOR(pg_catalog.=) 'm' THEN 'MATERIALIZED VIEW'
            WHEN c.relkind OPERATOR(pg_catalog.=) 'f' THEN 'FOREIGN TABLE'
            WHEN c.relkind OPERATOR(pg_catalog.=) 'p' THEN 'PARTITIONED TABLE' END,
       d.description,
       GREATEST(c.reltuples, 0)::pg_catalog.float8::pg_catalog.text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
LEFT JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) c.oid
      AND d.classoid OPERATOR(pg_catalog.=) 1259::pg_catalog.oid
      AND d.objsubid OPERATOR(pg_catalog.=) 0
WHERE n.nspname OPERATOR(pg_catalog.=) $1
  AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,v,m,f,p}'::pg_catalog.\"char\"[])
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND pg_catalog.has_table_privilege(c.oid,
        'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
ORDER BY c.relname";

/// One JSON document describing a table the role may see (no row if not;
/// run delegated).
///
/// Comments are read from `pg_description` (1259 is `pg_class`'s fixed
/// oid) rather than through `obj_description`/`col_description`: those
/// are SQL functions, and each call started an executor of its own, once
/// per column (measured: about a third of the server's work here).
pub const TABLE_DETAILS: &str = "\
WITH t AS (
  SELECT c.oid, c.relname, n.nspname
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2
    AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,v,m,f,p}'::pg_catalog.\"char\"[])
    AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
    AND pg_catalog.has_table_privilege(c.oid,
          'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
)
SELECT pg_catalog.json_build_object(
  'table', t.relname,
  'schema', t.nspname,
  'comment', (SELECT d.description FROM pg_catalog.pg_description d
              WHERE d.objoid OPERATOR(pg_catalog.=) t.oid
                AND d.classoid OPERATOR(pg_catalog.=) 1259::pg_catalog.oid
                AND d.objsubid OPERATOR(pg_catalog.=) 0),
  'columns', cols.list,
  'primaryKey', (
    SELECT COALESCE(pg_catalog.json_agg(a.attname ORDER BY k.ord), '[]'::pg_catalog.json)
    FROM pg_catalog.pg_constraint con
    CROSS JOIN LATERAL pg_catalog.unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) con.conrelid
                                  AND a.attnum OPERATOR(pg_catalog.=) k.attnum
    WHERE con.conrelid OPERATOR(pg_catalog.=) t.oid AND con.contype OPERATOR(pg_catalog.=) 'p'),
  'foreignKeys', (
    SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', con.conname,
      'columns', (SELECT pg_catalog.json_agg(a.attname ORDER BY k.ord)
                  FROM pg_catalog.unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) con.conrelid
                                                AND a.attnum OPERATOR(pg_catalog.=) k.attnum),
      'references', pg_catalog.json_build_object(
        'schema', rn.nspname,
        'table', rc.relname,
        'columns', (SELECT pg_catalog.json_agg(a.attname ORDER BY k.ord)
                    FROM pg_catalog.unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_catalog.pg_attribute a
                      ON a.attrelid OPERATOR(pg_catalog.=) con.confrelid
                     AND a.attnum OPERATOR(pg_catalog.=) k.attnum))
    ) ORDER BY con.conname), '[]'::pg_catalog.json)
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_class rc ON rc.oid OPERATOR(pg_catalog.=) con.confrelid
    JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) rc.relnamespace
    WHERE con.conrelid OPERATOR(pg_catalog.=) t.oid AND con.contype OPERATOR(pg_catalog.=) 'f'),
  'indexes', (
    SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', ic.relname, 'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
      'unique', i.indisunique
    ) ORDER BY ic.relname), '[]'::pg_catalog.json)
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
    WHERE i.indrelid OPERATOR(pg_catalog.=) t.oid),
  'checkConstraints', (
    SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', con.conname, 'definition', pg_catalog.pg_get_constraintdef(con.oid))
      ORDER BY con.conname), '[]'::pg_catalog.json)
    FROM pg_catalog.pg_constraint con
    WHERE con.conrelid OPERATOR(pg_catalog.=) t.oid AND con.contype OPERATOR(pg_catalog.=) 'c'),
  'columnCount', cols.n
)::pg_catalog.text
FROM t
CROSS JOIN LATERAL (
    SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', a.attname,
      'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
      'nullable', NOT a.attnotnull,
      'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid),
      'maxLength', CASE WHEN a.atttypid OPERATOR(pg_catalog.=) ANY ('{1042,1043}'::pg_catalog.oid[])
                         AND a.atttypmod OPERATOR(pg_catalog.>) 0
                        THEN a.atttypmod OPERATOR(pg_catalog.-) 4 END,
      'comment', cd.description) ORDER BY a.attnum),
      '[]'::pg_catalog.json) AS list,
    pg_catalog.count(*) AS n
    FROM pg_catalog.pg_attribute a
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid OPERATOR(pg_catalog.=) a.attrelid
                                     AND d.adnum OPERATOR(pg_catalog.=) a.attnum
    LEFT JOIN pg_catalog.pg_description cd ON cd.objoid OPERATOR(pg_catalog.=) a.attrelid
                                          AND cd.classoid OPERATOR(pg_catalog.=) 1259::pg_catalog.oid
                                          AND cd.objsubid OPERATOR(pg_catalog.=) a.attnum
    WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attnum OPERATOR(pg_catalog.>) 0
      AND NOT a.attisdropped
      AND pg_catalog.has_column_privilege(t.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')
) cols";

/// Every statement above, for the qualification test.
#[cfg(test)]
const ALL: &[&str] = &[
    BEGIN_READ,
    BEGIN_WRITE,
    SET_ROLE,
    SET_ROLE_CLAIMS,
    SET_ROLE_POOLED,
    SET_ROLE_CLAIMS_POOLED,
    BEGIN_READ_POOLED,
    BEGIN_WRITE_POOLED,
    ROLLBACK,
    COMMIT,
    DISCARD_ALL,
    GUARD,
    IDENTITY,
    PROFILE_16,
    PROFILE_15,
    USER_FUNCTIONS,
    HEALTH,
    TYPE_LOOKUP,
    SCHEMA,
    TABLE_DETAILS,
];

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Names in a `[{"node": {"String": {"sval": …}}}]` list.
    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.pointer("/node/String/sval").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    /// Every place in a parse tree where the server looks a name up along
    /// the search path, as (what, name).
    fn unqualified(value: &Value, ctes: &[String], found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match key.as_str() {
                        "FuncCall" | "funccall" => {
                            let name = names(&child["funcname"]);
                            if name.first().map(String::as_str) != Some("pg_catalog") {
                                found.push(format!("function {name:?}"));
                            }
                        }
                        "TypeName" | "type_name" => {
                            let name = names(&child["names"]);
                            if name.first().map(String::as_str) != Some("pg_catalog") {
                                found.push(format!("type {name:?}"));
                            }
                        }
                        "AExpr" => {
                            let kind = child["kind"].as_u64().unwrap_or(0);
                            let name = names(&child["name"]);
                            // 1 OP, 2 OP_ANY, 3 OP_ALL may be qualified;
                            // other kinds (IN, LIKE, DISTINCT…) cannot be.
                            if !(1..=3).contains(&kind)
                                || name.first().map(String::as_str) != Some("pg_catalog")
                            {
                                found.push(format!("operator {name:?} (kind {kind})"));
                            }
                        }
                        "SubLink" => {
                            let name = names(&child["oper_name"]);
                            if !name.is_empty()
                                && name.first().map(String::as_str) != Some("pg_catalog")
                            {
                                found.push(format!("subquery operator {name:?}"));
                            }
                        }
                        "CaseExpr" if !child["arg"].is_null() => {
                            found.push("CASE x WHEN (an unqualified =)".to_owned());
                        }
                        "RangeVar" => {
                            let schema = child["schemaname"].as_str().unwrap_or("");
                            let name = child["relname"].as_str().unwrap_or("").to_owned();
                            if schema != "pg_catalog" && !ctes.contains(&name) {
                                found.push(format!("relation {name}"));
                            }
                        }
                        _ => {}
                    }
                    unqualified(child, ctes, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| unqualified(i, ctes, found)),
            _ => {}
        }
    }

    fn cte_names(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "CommonTableExpr" {
                        if let Some(name) = child["ctename"].as_str() {
                            out.push(name.to_owned());
                        }
                    }
                    cte_names(child, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| cte_names(i, out)),
            _ => {}
        }
    }

    #[test]
    fn our_statements_name_everything_with_its_schema() {
        for sql in super::ALL {
            let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
                .unwrap_or_else(|err| panic!("{err}: {sql}"));
            let tree = serde_json::to_value(&parsed.protobuf.stmts).unwrap();
            let mut ctes = Vec::new();
            cte_names(&tree, &mut ctes);
            let mut found = Vec::new();
            unqualified(&tree, &ctes, &mut found);
            assert!(found.is_empty(), "unqualified names {found:?} in:\n{sql}");
        }
        // The check itself finds what it must.
        for bad in [
            "SELECT count(*)",
            "SELECT 1::text",
            "SELECT 1 = 1",
            "SELECT 1 WHERE 1 IN (1)",
            "SELECT * FROM pg_class",
            "SELECT CASE 1 WHEN 1 THEN 1 END",
        ] {
            let parsed = pg_query::parse(bad, pg_query::ParserOptions::DEFAULT).unwrap();
            let tree = serde_json::to_value(&parsed.protobuf.stmts).unwrap();
            let mut found = Vec::new();
            unqualified(&tree, &[], &mut found);
            assert!(!found.is_empty(), "{bad}");
        }
    }
}
