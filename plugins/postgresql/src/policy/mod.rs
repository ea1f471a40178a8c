//! The SQL policy: what a statement is, by PostgreSQL's own grammar
//! (pg_query), and whether the caller's delegated roles allow it. Decided
//! before any database round trip.
//!
//! Deny by default, twice over: a statement kind not classified as read is
//! never treated as read ([`statements`]), and a function or operator not
//! known to be safe is never called ([`functions`]). The whole tree is
//! walked ([`walk`]), so a data-modifying CTE, a locking clause in a
//! subquery, `SELECT … INTO`, a refused function in a FROM clause, a
//! DEFAULT, an index expression or an EXPLAIN target are all seen.

mod audit_text;
mod cache;
pub mod catalog;
pub mod functions;
#[cfg(test)]
mod fuzz;
mod size;
mod statements;
mod walk;

pub use audit_text::AuditText;

pub use cache::VerdictCache;
pub use catalog::{Snapshot, UserFunctions};

pub use functions::AllowedFunctions;

use mcp_delegate_plugin_api::codes;

/// Statement classes, least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatementClass {
    Read,
    Write,
    Admin,
    Dangerous,
}

impl StatementClass {
    pub fn label(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Admin => "admin",
            StatementClass::Dangerous => "dangerous",
        }
    }

    /// The delegated role that allows this class.
    pub fn required_role(self) -> &'static str {
        match self {
            StatementClass::Read => "sql-read",
            StatementClass::Write => "sql-write",
            StatementClass::Admin => "sql-admin",
            StatementClass::Dangerous => "admin",
        }
    }
}

/// What the policy concluded about an allowed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: StatementClass,
    /// `SELECT`, `INSERT`, … (for messages and the result's `command`).
    pub kind: String,
    /// Highest `$n` used: the number of parameters the statement takes.
    pub parameter_count: usize,
    /// What the audit log may show of it.
    pub audit_text: AuditText,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    /// The reason category: `parse`, `multiple-statements`,
    /// `session-control`, `code`, `roles`, `role` (the caller's delegated
    /// roles are not enough), `system-catalog`, or a function category
    /// (`query-text`, `settings`, `unknown-function`, …).
    pub reason: &'static str,
    pub message: Box<str>,
    pub statement_kind: Option<Box<str>>,
    pub required_role: Option<&'static str>,
    pub function: Option<Box<str>>,
    pub operator: Option<Box<str>>,
    /// The refused statement's fingerprint and normalized text, when it
    /// parsed within the size bound (for the audit log).
    pub audit_text: Option<Box<AuditText>>,
}

/// Longest refusal message kept: parse errors quote the SQL near the
/// error, and the verdict cache keeps refusals.
const MAX_MESSAGE_CHARS: usize = 300;

impl Refusal {
    fn new(code: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        Self {
            code,
            reason,
            message: message.into(),
            statement_kind: None,
            required_role: None,
            function: None,
            operator: None,
            audit_text: None,
        }
    }

    /// Bytes this refusal holds (the verdict cache's budget).
    pub fn heap_bytes(&self) -> usize {
        self.message.len()
            + self.audit_text.as_ref().map_or(0, |text| text.heap_bytes())
            + self.statement_kind.as_ref().map_or(0, |s| s.len())
            + self.function.as_ref().map_or(0, |s| s.len())
            + self.operator.as_ref().map_or(0, |s| s.len())
    }
}

/// Classifies `sql` and checks it against the caller's delegated roles.
#[cfg(test)]
pub fn check(sql: &str, delegated_roles: &[String]) -> Result<Verdict, Refusal> {
    let verdict = analyze(sql, &AllowedFunctions::default(), &Snapshot::default())?;
    authorize(&verdict, delegated_roles)?;
    Ok(verdict)
}

/// What a statement is, whoever runs it (cacheable by SQL text, config and
/// the database's function names).
pub fn analyze(
    sql: &str,
    allowed: &AllowedFunctions,
    user_functions: &Snapshot,
) -> Result<Verdict, Refusal> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(|err| {
        Refusal::new(
            codes::SQL_PARSE_ERROR,
            "parse",
            format!("the SQL could not be parsed: {err}"),
        )
    })?;
    let statements = &parsed.protobuf.stmts;
    let statement = match statements.as_slice() {
        [] => {
            return Err(Refusal::new(
                codes::SQL_PARSE_ERROR,
                "parse",
                "the SQL contains no statement",
            ))
        }
        [one] => one,
        _ => {
            return Err(Refusal::new(
                codes::SQL_MULTIPLE_STATEMENTS,
                "multiple-statements",
                format!(
                    "exactly one statement is allowed per call; found {}",
                    statements.len()
                ),
            ))
        }
    };
    let top = statement
        .stmt
        .as_ref()
        .and_then(|node| node.node.as_ref())
        .ok_or_else(|| {
            Refusal::new(
                codes::SQL_PARSE_ERROR,
                "parse",
                "the SQL contains no statement",
            )
        })?;
    let tree = serde_json::to_value(&parsed.protobuf.stmts).map_err(|err| {
        Refusal::new(
            codes::SQL_PARSE_ERROR,
            "parse",
            format!("the parse tree could not be read: {err}"),
        )
    })?;
    let mut walker = walk::Walker::new(allowed, user_functions);
    walker.walk(&tree);
    let findings = walker.findings;
    if let Some((kind, reason)) = findings.never_statement {
        return Err(statements::never_refusal(kind, reason));
    }
    let kind = statements::kind_name(top);
    let mut class = statements::classify(top)?;
    if let Some(call) = findings.refused_call {
        let (subject, field) = if call.operator {
            (format!("the operator {}", call.what), "operator")
        } else {
            (format!("the function {}()", call.what), "function")
        };
        let why = match (call.denied.category, call.denied.never) {
            ("unknown-function", _) => {
                "is not a known built-in; name it in the module's allowedFunctions to allow it"
                    .to_owned()
            }
            ("unknown-operator", _) => {
                "is not a known built-in operator; name its schema in allowedFunctions to allow it"
                    .to_owned()
            }
            ("not-allowed", _) => "is not in the module's allowedFunctions".to_owned(),
            (category, true) => {
                format!("is never permitted through this tool ({category})")
            }
            (category, false) => format!(
                "is not permitted through this tool ({category}); an operator may allow it \
                 with allowedFunctions"
            ),
        };
        let mut refusal = Refusal::new(
            codes::SQL_FORBIDDEN_FUNCTION,
            call.denied.category,
            format!("{subject} {why}"),
        );
        if field == "operator" {
            refusal.operator = Some(call.what.into());
        } else {
            refusal.function = Some(call.what.into());
        }
        return Err(refusal);
    }
    if let Some(target) = findings.catalog_target {
        return Err(Refusal {
            statement_kind: Some(kind.into()),
            ..Refusal::new(
                codes::SQL_NOT_PERMITTED,
                "system-catalog",
                format!("writing to the system catalog relation {target} is not permitted, for any role"),
            )
        });
    }
    if findings.modifies_data || findings.locks_rows {
        class = class.max(StatementClass::Write);
    }
    if findings.creates_table {
        class = class.max(StatementClass::Admin);
    }
    Ok(Verdict {
        class,
        kind,
        parameter_count: findings.parameter_count,
        audit_text: AuditText::of(sql),
    })
}

/// Whether the delegated roles allow a statement of this class.
pub fn authorize(verdict: &Verdict, delegated_roles: &[String]) -> Result<(), Refusal> {
    let (class, kind) = (verdict.class, &verdict.kind);
    let allowed = match class {
        StatementClass::Read => true,
        StatementClass::Write => has_any(delegated_roles, &["sql-write", "sql-admin", "admin"]),
        StatementClass::Admin => has_any(delegated_roles, &["sql-admin", "admin"]),
        StatementClass::Dangerous => has_any(delegated_roles, &["admin"]),
    };
    if !allowed {
        let role = class.required_role();
        return Err(Refusal {
            statement_kind: Some(kind.as_str().into()),
            required_role: Some(role),
            ..Refusal::new(
                codes::SQL_NOT_PERMITTED,
                "role",
                format!(
                    "{kind} (a {} statement) needs the delegated role '{role}'",
                    class.label()
                ),
            )
        });
    }
    Ok(())
}

fn has_any(roles: &[String], wanted: &[&str]) -> bool {
    roles.iter().any(|role| wanted.contains(&role.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(sql: &str) -> Result<StatementClass, &'static str> {
        check(sql, &["admin".to_owned()])
            .map(|v| v.class)
            .map_err(|r| r.code)
    }

    /// Every built-in in a never-allowed category, called in every place a
    /// call can hide, is refused for admin too, with its category.
    #[test]
    fn every_never_allowed_builtin_is_refused_everywhere_even_for_admin() {
        let table = include_str!("../../data/functions.tsv");
        let mut checked = 0;
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.split('\t').collect();
            let (schema, name, min, category) = (fields[0], fields[1], fields[3], fields[6]);
            if schema != "pg_catalog" || !functions::NEVER_CATEGORIES.contains(&category) {
                continue;
            }
            let args = vec!["NULL"; min.parse().unwrap()].join(", ");
            let call = format!("{name}({args})");
            for sql in [
                format!("SELECT {call}"),
                format!("SELECT * FROM pg_catalog.{call}"),
                format!("SELECT 1 WHERE EXISTS (SELECT {})", call.to_uppercase()),
                format!("WITH x AS (SELECT {call}) SELECT * FROM x"),
                format!("EXPLAIN SELECT {call}"),
                format!("CREATE VIEW v AS SELECT {call}"),
                format!("CREATE TABLE t (a text DEFAULT {call})"),
                format!("SELECT * FROM t ORDER BY {call}"),
            ] {
                let refusal = check(&sql, &["admin".to_owned()]).unwrap_err();
                assert_eq!(refusal.code, codes::SQL_FORBIDDEN_FUNCTION, "{sql}");
                assert_eq!(refusal.reason, category, "{sql}");
                checked += 1;
            }
        }
        assert!(checked > 8 * 150, "{checked}");
    }

    #[test]
    fn query_text_executors_and_catalog_writes_are_refused() {
        let attack =
            "SELECT b.word FROM ts_stat($$SELECT set_config('role','carol',false)::tsvector$$) a \
            CROSS JOIN LATERAL ts_stat('SELECT 1') b";
        let refusal = check(attack, &[]).unwrap_err();
        assert_eq!(
            (refusal.code, refusal.reason),
            (codes::SQL_FORBIDDEN_FUNCTION, "query-text")
        );
        assert_eq!(refusal.function.as_deref(), Some("ts_stat"));
        let refusal = check("SELECT ts_rewrite('a'::tsquery, 'SELECT 1')", &[]).unwrap_err();
        assert_eq!(refusal.reason, "query-text");
        assert!(check(
            "SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)",
            &[]
        )
        .is_ok());
        for sql in [
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'role'",
            "UPDATE pg_catalog.pg_settings SET setting = 'x'",
            "INSERT INTO pg_catalog.pg_class DEFAULT VALUES",
            "WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT 1",
            "DELETE FROM information_schema.sql_features",
            "TRUNCATE pg_catalog.pg_largeobject",
        ] {
            let refusal = check(sql, &["admin".to_owned()]).unwrap_err();
            assert_eq!(
                (refusal.code, refusal.reason),
                (codes::SQL_NOT_PERMITTED, "system-catalog"),
                "{sql}"
            );
        }
        // Attribute notation calls a one-argument function.
        let refusal = check("SELECT n.ts_stat FROM notes n", &[]).unwrap_err();
        assert_eq!(refusal.reason, "query-text");
        let refusal = check("SELECT (n).pg_read_file FROM notes n", &[]).unwrap_err();
        assert_eq!(refusal.reason, "file");
        // Unknown functions and operators, and a user schema's functions.
        assert_eq!(
            check("SELECT my_func(1)", &[]).unwrap_err().reason,
            "unknown-function"
        );
        assert_eq!(
            check("SELECT public.f()", &[]).unwrap_err().reason,
            "not-allowed"
        );
        assert_eq!(
            check("SELECT 1 === 2", &[]).unwrap_err().reason,
            "unknown-operator"
        );
        assert_eq!(
            check("SELECT 1 OPERATOR(public.+) 2", &[])
                .unwrap_err()
                .reason,
            "unknown-operator"
        );
        assert!(check(
            "SELECT 1 OPERATOR(pg_catalog.+) 2 WHERE 'a' LIKE 'b' AND 3 BETWEEN 1 AND 4",
            &[]
        )
        .is_ok());
        assert_eq!(
            check("SELECT nextval('s')", &["sql-write".into()])
                .unwrap()
                .class,
            StatementClass::Write
        );
        assert_eq!(
            check("SELECT nextval('s')", &[]).unwrap_err().required_role,
            Some("sql-write")
        );
    }

    #[test]
    fn operators_and_methods_outside_expressions_are_judged() {
        for sql in [
            "SELECT * FROM notes ORDER BY id USING OPERATOR(public.<<<)",
            "SELECT array_agg(id ORDER BY id USING OPERATOR(public.<<<)) FROM notes",
            "CREATE TABLE t (c int, EXCLUDE USING gist (c WITH OPERATOR(public.&&&)))",
            "SELECT * FROM notes TABLESAMPLE public.evil(1)",
            "SELECT * FROM notes TABLESAMPLE evil(1)",
        ] {
            let refusal = check(sql, &["admin".to_owned()]).unwrap_err();
            assert_eq!(refusal.code, codes::SQL_FORBIDDEN_FUNCTION, "{sql}");
        }
        for sql in [
            "SELECT * FROM notes ORDER BY id USING <",
            "SELECT * FROM notes TABLESAMPLE SYSTEM (10)",
            "SELECT * FROM notes TABLESAMPLE bernoulli (10) REPEATABLE (1)",
            "CREATE TABLE t (c int, EXCLUDE USING gist (c WITH =))",
        ] {
            assert!(check(sql, &["admin".to_owned()]).is_ok(), "{sql}");
        }
    }

    #[test]
    fn a_call_is_judged_by_the_overloads_that_take_its_arguments() {
        // Ordered-set and hypothetical-set aggregates: the ORDER BY columns
        // count as arguments.
        for sql in [
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY id) FROM notes",
            "SELECT percentile_disc(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY id) FROM notes",
            "SELECT mode() WITHIN GROUP (ORDER BY id) FROM notes",
            "SELECT rank(3) WITHIN GROUP (ORDER BY id) FROM notes",
        ] {
            assert!(check(sql, &[]).is_ok(), "{sql}");
        }
        // No built-in lower() takes three arguments: whatever the server
        // would find is not a built-in.
        let refusal = check("SELECT lower('a', 'b', 'c')", &[]).unwrap_err();
        assert_eq!(refusal.reason, "unknown-function", "{refusal:?}");
    }

    #[test]
    fn code_defining_statements_are_never_permitted() {
        for sql in [
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
            "ALTER FUNCTION f() SECURITY DEFINER",
            "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()",
            "CREATE RULE r AS ON INSERT TO x DO INSTEAD NOTHING",
            "CREATE EXTENSION dblink",
            "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)",
            "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int)",
            "CREATE CAST (int AS text) WITH FUNCTION f(int)",
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw",
            "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
            "GRANT writer TO reader",
            "CREATE DATABASE d",
            "COPY t FROM PROGRAM 'id'",
        ] {
            let refusal = check(sql, &["admin".to_owned()]).unwrap_err();
            assert_eq!(refusal.code, codes::SQL_NOT_PERMITTED, "{sql}");
        }
    }

    #[test]
    fn classes() {
        assert_eq!(class_of("SELECT 1"), Ok(StatementClass::Read));
        assert_eq!(class_of("SHOW search_path"), Ok(StatementClass::Read));
        assert_eq!(class_of("EXPLAIN SELECT 1"), Ok(StatementClass::Read));
        assert_eq!(
            class_of("EXPLAIN ANALYZE DELETE FROM t"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("EXPLAIN INSERT INTO t VALUES (1)"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("SELECT * FROM t FOR UPDATE"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("SELECT * INTO t2 FROM t"),
            Ok(StatementClass::Admin)
        );
        assert_eq!(class_of("LOCK TABLE t"), Ok(StatementClass::Write));
        assert_eq!(class_of("VACUUM t"), Ok(StatementClass::Admin));
        assert_eq!(class_of("DROP TABLE t"), Ok(StatementClass::Dangerous));
        assert_eq!(class_of("TRUNCATE t"), Ok(StatementClass::Dangerous));
        assert_eq!(class_of("SET ROLE x"), Err(codes::SQL_NOT_PERMITTED));
        assert_eq!(
            class_of("SELECT 1; RESET ROLE"),
            Err(codes::SQL_MULTIPLE_STATEMENTS)
        );
        assert_eq!(class_of("-- nothing"), Err(codes::SQL_PARSE_ERROR));
        assert_eq!(class_of("EXPLAIN EXECUTE p"), Err(codes::SQL_NOT_PERMITTED));
    }

    #[test]
    fn statement_classes_the_issue_list_left_open() {
        for never in [
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE p",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 1 FROM c",
            "MOVE 1 IN c",
            "CLOSE c",
        ] {
            assert_eq!(class_of(never), Err(codes::SQL_NOT_PERMITTED), "{never}");
        }
        for admin in [
            "VACUUM t",
            "ANALYZE t",
            "CLUSTER t USING i",
            "REINDEX TABLE t",
            "REFRESH MATERIALIZED VIEW m",
            "CHECKPOINT",
            "CREATE INDEX ON t (a)",
            "COMMENT ON TABLE t IS 'x'",
        ] {
            assert_eq!(class_of(admin), Ok(StatementClass::Admin), "{admin}");
        }
        // A procedure is a function like any other: refused unless allowed.
        assert_eq!(class_of("CALL p()"), Err(codes::SQL_FORBIDDEN_FUNCTION));
        let allowed = AllowedFunctions::parse(&["public.p".into()]).unwrap();
        assert_eq!(
            analyze("CALL public.p()", &allowed, &Snapshot::default()).map(|v| v.class),
            Ok(StatementClass::Admin)
        );
        assert_eq!(
            class_of("LOCK TABLE t IN SHARE MODE"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("EXPLAIN UPDATE t SET a = 1"),
            Ok(StatementClass::Write)
        );
        assert_eq!(class_of("   "), Err(codes::SQL_PARSE_ERROR));
    }

    #[test]
    fn roles_and_parameters() {
        let read_only: Vec<String> = vec![];
        let refusal = check("INSERT INTO t VALUES ($1)", &read_only).unwrap_err();
        assert_eq!(refusal.code, codes::SQL_NOT_PERMITTED);
        assert_eq!(refusal.required_role, Some("sql-write"));
        assert_eq!(refusal.statement_kind.as_deref(), Some("INSERT"));
        let writer = vec!["sql-write".to_owned()];
        let verdict = check("UPDATE t SET a = $2 WHERE id = $1", &writer).unwrap();
        assert_eq!(verdict.parameter_count, 2);
        assert_eq!(
            check("CREATE TABLE x (a int)", &writer)
                .unwrap_err()
                .required_role,
            Some("sql-admin")
        );
        assert_eq!(
            check("SELECT created_at FROM t", &read_only).unwrap().class,
            StatementClass::Read
        );
    }
}
