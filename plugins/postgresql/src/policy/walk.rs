//! The walk over a statement's *complete* parse tree (its serde form:
//! pg_query's own node iterator skips some node types), collecting what
//! the policy judges: every function call, operator and attribute-notation
//! call, data-modifying and row-locking nodes, `INTO`, the targets of
//! writes, and the highest `$n`.

use serde_json::Value;

use super::catalog::Snapshot;
use super::functions::{
    decide_function, decide_operator, denied_in_attribute_notation, AllowedFunctions, CallDecision,
    Denied,
};

/// A call the policy refuses: what it was, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCall {
    /// `schema.name`, `name`, or `OPERATOR(schema.op)` as written.
    pub what: String,
    pub operator: bool,
    pub denied: Denied,
}

/// What the walk found.
#[derive(Default)]
pub struct Findings {
    /// The first refused call, in the order of the statement.
    pub refused_call: Option<RefusedCall>,
    /// A write or a function that writes (`nextval`).
    pub modifies_data: bool,
    pub locks_rows: bool,
    pub creates_table: bool,
    /// The first write target in a system schema (`pg_catalog.pg_settings`).
    pub catalog_target: Option<String>,
    /// The first statement of a never-permitted kind, at any depth.
    pub never_statement: Option<(&'static str, &'static str)>,
    pub parameter_count: usize,
}

/// The names in a `[{"node": {"String": {"sval": …}}}]` list; `None` if
/// any element is not a plain name.
fn name_list(list: &Value) -> Option<Vec<&str>> {
    list.as_array()?
        .iter()
        .map(|item| item.pointer("/node/String/sval").and_then(Value::as_str))
        .collect()
}

/// Splits `[schema.]name` (or `catalog.schema.name`) into its parts.
fn qualified<'a>(parts: &[&'a str]) -> Option<(Option<&'a str>, &'a str)> {
    match parts {
        [name] => Some((None, name)),
        [schema, name] | [_, schema, name] => Some((Some(schema), name)),
        _ => None,
    }
}

/// `A_Expr` kinds whose `name` is not an operator (BETWEEN and its forms
/// expand to `>=`/`<=` on the server).
const BETWEEN_KINDS: [u64; 4] = [11, 12, 13, 14];

/// A `RangeVar`'s (schema, name); the schema is empty when unqualified.
fn relation_name(range_var: &Value) -> (&str, &str) {
    let field = |key| range_var.get(key).and_then(Value::as_str).unwrap_or("");
    (field("schemaname"), field("relname"))
}

/// Relations no statement may write, whatever its class: the system
/// catalogs (`pg_settings` updates call `set_config`).
fn is_system_relation(range_var: &Value) -> Option<String> {
    let (schema, name) = relation_name(range_var);
    let system = matches!(schema, "pg_catalog" | "information_schema" | "pg_toast")
        || (schema.is_empty() && name.starts_with("pg_"));
    system.then(|| {
        if schema.is_empty() {
            name.to_owned()
        } else {
            format!("{schema}.{name}")
        }
    })
}

/// Relations that show the pooled session's state left by other callers:
/// `pg_prepared_statements` lists the statements (and SQL text) that
/// earlier calls, of any identity, prepared on the connection.
fn session_relation(range_var: &Value) -> Option<&'static str> {
    let (schema, name) = relation_name(range_var);
    (matches!(schema, "" | "pg_catalog") && name == "pg_prepared_statements")
        .then_some("pg_prepared_statements")
}

pub struct Walker<'a> {
    allowed: &'a AllowedFunctions,
    user_functions: &'a Snapshot,
    pub findings: Findings,
}

impl<'a> Walker<'a> {
    pub fn new(allowed: &'a AllowedFunctions, user_functions: &'a Snapshot) -> Self {
        Self {
            allowed,
            user_functions,
            findings: Findings::default(),
        }
    }

    fn judge(&mut self, what: impl FnOnce() -> String, operator: bool, decision: CallDecision) {
        match decision {
            CallDecision::Allow => {}
            CallDecision::Write => self.findings.modifies_data = true,
            CallDecision::Deny(denied) => {
                if self.findings.refused_call.is_none() {
                    self.findings.refused_call = Some(RefusedCall {
                        what: what(),
                        operator,
                        denied,
                    });
                }
            }
        }
    }

    fn function_call(&mut self, call: &Value) {
        let names = call.get("funcname").and_then(name_list).unwrap_or_default();
        let Some((schema, name)) = qualified(&names) else {
            // Not a name the server could resolve either; refuse it.
            self.judge(|| names.join("."), false, unknown());
            return;
        };
        // An ordered-set aggregate's ORDER BY columns are arguments too:
        // percentile_cont(0.5) WITHIN GROUP (ORDER BY x) is
        // percentile_cont(float8, float8). A name that is never allowed
        // with its direct arguments alone stays refused as such (the
        // server rejects WITHIN GROUP on a plain function, but the policy
        // does not lean on that).
        let direct = items(call, "args").count();
        let within_group = call.get("agg_within_group").and_then(Value::as_bool) == Some(true);
        let mut decision = decide_function(schema, name, direct, self.allowed);
        if within_group && !is_never(&decision) {
            let ordered = items(call, "agg_order").count();
            decision = decide_function(schema, name, direct + ordered, self.allowed);
        }
        self.judge(|| names.join("."), false, decision);
    }

    fn operator(&mut self, name: &Value) {
        let names = name_list(name).unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let decision = match qualified(&names) {
            Some((schema, symbol)) => decide_operator(schema, symbol, self.allowed),
            None => unknown_operator(),
        };
        self.judge(
            || match names.as_slice() {
                [symbol] => (*symbol).to_owned(),
                _ => format!("OPERATOR({})", names.join(".")),
            },
            true,
            decision,
        );
    }

    /// A TABLESAMPLE method: the built-in `system` and `bernoulli`, or one
    /// the operator allowed (`tsm_system_rows` defines `system_rows`).
    fn sample_method(&mut self, method: &Value) {
        let names = name_list(method).unwrap_or_default();
        let decision = match qualified(&names) {
            Some((None | Some("pg_catalog"), "system" | "bernoulli")) => CallDecision::Allow,
            Some((Some(schema), name)) if self.allowed.admits_qualified(schema, name) => {
                CallDecision::Allow
            }
            Some((None, name)) if self.allowed.admits_unqualified(name) => CallDecision::Allow,
            _ => CallDecision::Deny(Denied {
                category: "not-allowed",
                never: false,
            }),
        };
        self.judge(|| names.join("."), false, decision);
    }

    /// `t.f` and `(x).f` call `f(t)` when `t` has no column `f`, and on
    /// plain values too: judged as a call of every one-argument `f` the
    /// database has (see [`super::catalog`]).
    fn attribute(&mut self, name: &str) {
        if let Some(category) = denied_in_attribute_notation(name) {
            let never = super::functions::NEVER_CATEGORIES.contains(&category)
                || category == "query-text-or-network";
            self.judge(
                || name.to_owned(),
                false,
                CallDecision::Deny(Denied { category, never }),
            );
            return;
        }
        let Some(schemas) = self.user_functions.schemas_of(name) else {
            return;
        };
        let allowed = self.allowed;
        if let Some(schema) = schemas
            .iter()
            .find(|schema| !allowed.admits_qualified(schema, name))
        {
            self.judge(
                || format!("{schema}.{name}"),
                false,
                CallDecision::Deny(Denied {
                    category: "attribute-call",
                    never: false,
                }),
            );
        }
    }

    fn write_target(&mut self, relation: &Value) {
        if let Some(name) = is_system_relation(relation) {
            self.findings.catalog_target.get_or_insert(name);
        }
    }

    pub fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    self.visit(key, child);
                    self.walk(child);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.walk(item)),
            _ => {}
        }
    }

    fn visit(&mut self, key: &str, child: &Value) {
        if let Some(never) = super::statements::never_node(key) {
            self.findings.never_statement.get_or_insert(never);
        }
        match key {
            // A function call node, or CALL's `funccall` field.
            "FuncCall" | "funccall" if child.is_object() => self.function_call(child),
            "AExpr" => {
                let kind = child.get("kind").and_then(Value::as_u64).unwrap_or(0);
                if !BETWEEN_KINDS.contains(&kind) {
                    if let Some(name) = child.get("name") {
                        self.operator(name);
                    }
                }
            }
            "SubLink" => {
                if let Some(name) = child.get("oper_name") {
                    self.operator(name);
                }
            }
            // ORDER BY … USING op (also in aggregates and windows).
            "SortBy" => {
                if let Some(name) = child.get("use_op") {
                    self.operator(name);
                }
            }
            // EXCLUDE USING … (column WITH op, …).
            "Constraint" => {
                for exclusion in items(child, "exclusions") {
                    if let Some(operator) = exclusion.pointer("/node/List/items/1/node/List/items")
                    {
                        self.operator(operator);
                    }
                }
            }
            // TABLESAMPLE method(…): the method is a handler function.
            "RangeTableSample" => {
                if let Some(method) = child.get("method") {
                    self.sample_method(method);
                }
            }
            "ColumnRef" => {
                let fields = child.get("fields").and_then(Value::as_array);
                if let Some(fields) = fields.filter(|fields| fields.len() >= 2) {
                    if let Some(name) = fields
                        .last()
                        .and_then(|f| f.pointer("/node/String/sval"))
                        .and_then(Value::as_str)
                    {
                        self.attribute(name);
                    }
                }
            }
            "AIndirection" => {
                for item in items(child, "indirection") {
                    if let Some(name) = item.pointer("/node/String/sval").and_then(Value::as_str) {
                        self.attribute(name);
                    }
                }
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.findings.modifies_data = true;
                if let Some(relation) = child.get("relation") {
                    self.write_target(relation);
                }
            }
            "TruncateStmt" | "LockStmt" => {
                for relation in items(child, "relations") {
                    if let Some(range_var) = relation.pointer("/node/RangeVar") {
                        self.write_target(range_var);
                    }
                }
            }
            "RangeVar" => {
                if let Some(name) = session_relation(child) {
                    self.judge(
                        || name.to_owned(),
                        false,
                        CallDecision::Deny(Denied {
                            category: "session-state",
                            never: true,
                        }),
                    );
                }
            }
            "LockingClause" => self.findings.locks_rows = true,
            "locking_clause" if child.as_array().is_some_and(|items| !items.is_empty()) => {
                self.findings.locks_rows = true
            }
            // SELECT … INTO creates a table.
            "IntoClause" => self.findings.creates_table = true,
            "into_clause" if !child.is_null() => self.findings.creates_table = true,
            "ParamRef" => {
                let number = child.get("number").and_then(Value::as_u64).unwrap_or(0);
                self.findings.parameter_count = self
                    .findings
                    .parameter_count
                    .max(usize::try_from(number).unwrap_or(0));
            }
            _ => {}
        }
    }
}

fn unknown() -> CallDecision {
    CallDecision::Deny(Denied {
        category: "unknown-function",
        never: false,
    })
}

fn unknown_operator() -> CallDecision {
    CallDecision::Deny(Denied {
        category: "unknown-operator",
        never: false,
    })
}

/// The elements of the array under `key`, none when it is absent.
fn items<'v>(node: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    node.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_never(decision: &CallDecision) -> bool {
    matches!(decision, CallDecision::Deny(Denied { never: true, .. }))
}
