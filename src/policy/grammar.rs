//! The second reading: PostgreSQL's own grammar (libpg_query, through the
//! `pg_query` crate) on the exact bytes the server will parse.
//!
//! rolegate's own reader (`lex` + `parsed`/`fallback` + `guards`) decides
//! first; this reading must agree before anything is allowed. It closes, at
//! the root, the classes where a hand-written reader and PostgreSQL's
//! grammar can differ:
//!
//! * **Where a function is called.** PostgreSQL's attribute notation makes
//!   `t.f` mean `f(t)`, `(expr).f` too. Every *name* in the tree (function
//!   names, every field of a column reference, indirection, relation names,
//!   labels, aliases, type names) is looked up in the deny-list; only
//!   literals (`A_Const`, a `NOTIFY` payload, a two-phase `gid`) are not
//!   names. A denied name cannot be called without appearing as one.
//! * **`SELECT … INTO`** is an `IntoClause` in the tree, wherever a keyword
//!   spelled as a label or a string continuation put it.
//! * **Statement types**: the top-level statement must be on the allow-list
//!   (some only with a `[policy]` switch), and a statement nested in another
//!   (`EXPLAIN`, `PREPARE`, `DECLARE`, `COPY (…)`, a CTE) must be plain DML.
//! * **Settings**: `SET`/`RESET` of a protected setting, `set_config` with a
//!   non-constant or protected name, `UPDATE pg_settings` (a rule that calls
//!   `set_config`), `COPY` to or from a file or program.
//!
//! The walk is complete by construction: it is a `serde::Serializer` over
//! the parse tree, so every field of every node is visited — no node type
//! can be forgotten. The tree's depth is bounded by the protobuf decoder's
//! recursion limit (a deeper text fails to decode and is refused), and
//! libpg_query checks its own stack depth.
//!
//! [`Reading::NoStandardStrings`] reads the text as the server would with
//! `standard_conforming_strings = off`: the enforcer uses it for a message
//! pipelined behind one that could have changed the setting.

use serde::Serialize;
use serde::ser::{self, Impossible};

use pg_query::protobuf::{self, node::Node as N};

use super::denylist;
use super::settings::{self, Protected};
use super::{Class, Decision, Need};

/// Which server reading of the text to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// `standard_conforming_strings = on` (what the proxy pins).
    Standard,
    /// `standard_conforming_strings = off`.
    NoStandardStrings,
}

/// The grammar's decision for each statement of a text, in order.
pub(crate) type Statements = Vec<Decision>;

/// PostgreSQL's parser rejected the text (the server would too). The
/// parser's message is not kept: it may quote the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

/// Read `sql` with PostgreSQL's grammar and decide every statement.
pub(crate) fn read(sql: &str, reading: Reading) -> Result<Statements, Rejected> {
    let options = match reading {
        Reading::Standard => pg_query::ParserOptions::DEFAULT,
        Reading::NoStandardStrings => pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS,
    };
    let parsed = pg_query::parse(sql, options).map_err(|_| Rejected)?;
    Ok(parsed
        .protobuf
        .stmts
        .iter()
        .map(
            |raw| match raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                Some(node) => statement(node),
                None => {
                    Decision::refuse(Class::Unparseable, "PostgreSQL's parser gave no statement")
                }
            },
        )
        .collect())
}

/// One top-level statement: its type, then everything inside it.
fn statement(node: &N) -> Decision {
    let top = top_level(node);
    if !top.allowed {
        return top;
    }
    let mut walk = Walk::default();
    let walked = match node {
        N::SelectStmt(s) => s.serialize(&mut walk),
        N::InsertStmt(s) => s.serialize(&mut walk),
        N::UpdateStmt(s) => s.serialize(&mut walk),
        N::DeleteStmt(s) => s.serialize(&mut walk),
        N::MergeStmt(s) => s.serialize(&mut walk),
        other => other.serialize(&mut walk),
    };
    match (walked, walk.refusal) {
        (_, Some(d)) => d,
        (Err(_), None) => Decision::refuse(Class::Unparseable, "the statement could not be read"),
        (Ok(()), None) => match walk.set_config {
            // Rare: inspect set_config calls structurally.
            true if pinned_set_config(node) => top,
            true => set_config_calls(node).unwrap_or(top),
            false => top,
        },
    }
}

/// The decision from the top-level statement type alone.
fn top_level(node: &N) -> Decision {
    use Class::*;
    match node {
        N::SelectStmt(_) | N::ExplainStmt(_) if explain_ok(node) => Decision::allow(Read),
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => {
            Decision::allow(Write)
        }
        N::TransactionStmt(_) | N::ConstraintsSetStmt(_) => Decision::allow(Transaction),
        N::VariableSetStmt(s) => set_statement(s),
        N::VariableShowStmt(_) => Decision::allow(Session),
        N::PrepareStmt(_) | N::ExecuteStmt(_) | N::DeallocateStmt(_) => Decision::allow(Prepared),
        N::DeclareCursorStmt(_) | N::FetchStmt(_) | N::ClosePortalStmt(_) => {
            Decision::allow(Cursor)
        }
        N::ListenStmt(_) | N::NotifyStmt(_) | N::UnlistenStmt(_) => Decision::allow(ListenNotify),
        N::DiscardStmt(_) => Decision::allow(Discard),
        N::LockStmt(_) => Decision::allow(Lock),
        N::CopyStmt(c) if c.filename.is_empty() && !c.is_program => Decision::allow(Copy),
        N::CopyStmt(_) => Decision::refuse(
            CopyFile,
            "COPY to or from a server file or program is not allowed on a runtime session",
        ),
        N::CreateStmt(c) if c.relation.as_ref().is_some_and(|r| r.relpersistence == "t") => {
            temp_table()
        }
        N::CreateTableAsStmt(c) if creates_temp_table(c) => temp_table(),
        N::TruncateStmt(_) => Decision::switchable(
            Truncate,
            Need::Truncate,
            "TRUNCATE is not allowed on a runtime session",
        ),
        N::VacuumStmt(_) => Decision::switchable(
            Maintenance,
            Need::Maintenance,
            "VACUUM/ANALYZE are not allowed on a runtime session",
        ),
        N::CallStmt(c) => call(c),
        N::GrantStmt(_)
        | N::GrantRoleStmt(_)
        | N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::DropRoleStmt(_)
        | N::AlterDefaultPrivilegesStmt(_)
        | N::ReassignOwnedStmt(_) => Decision::refuse(
            RoleChange,
            "changing roles or privileges is not allowed on a runtime session",
        ),
        _ => Decision::refuse(
            Ddl,
            "DDL is not allowed on a runtime session (a statement type outside the allow-list)",
        ),
    }
}

/// `CREATE TEMP TABLE … AS`.
fn creates_temp_table(c: &protobuf::CreateTableAsStmt) -> bool {
    c.objtype == protobuf::ObjectType::ObjectTable as i32
        && c.into
            .as_ref()
            .and_then(|i| i.rel.as_ref())
            .is_some_and(|r| r.relpersistence == "t")
}

/// `CALL`, switchable per procedure (by its name parts as the grammar
/// folded them).
fn call(c: &protobuf::CallStmt) -> Decision {
    let parts = c
        .funccall
        .as_ref()
        .map(|f| names(&f.funcname))
        .unwrap_or_default();
    Decision::switchable(
        Class::Call,
        Need::Call(parts),
        "CALL is not allowed on a runtime session",
    )
}

fn temp_table() -> Decision {
    Decision::switchable(
        Class::TempTable,
        Need::TempTables,
        "temporary tables are not allowed on a runtime session",
    )
}

/// `EXPLAIN` only of what may run on its own (its `ANALYZE` executes it).
fn explain_ok(node: &N) -> bool {
    let N::ExplainStmt(e) = node else {
        return true;
    };
    matches!(
        e.query.as_deref().and_then(|n| n.node.as_ref()),
        Some(
            N::SelectStmt(_)
                | N::InsertStmt(_)
                | N::UpdateStmt(_)
                | N::DeleteStmt(_)
                | N::MergeStmt(_)
                | N::DeclareCursorStmt(_)
                | N::ExecuteStmt(_)
        )
    )
}

/// The string parts of a qualified name list.
fn names(list: &[protobuf::Node]) -> Vec<String> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(N::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// `SET`/`RESET` (the grammar folds `SET ROLE`, `SET SESSION
/// AUTHORIZATION`, `SET NAMES` into this node too).
fn set_statement(s: &protobuf::VariableSetStmt) -> Decision {
    use protobuf::VariableSetKind as K;
    let Some(p) = settings::protected(&s.name) else {
        return Decision::allow(Class::Session);
    };
    let kind = K::try_from(s.kind).unwrap_or(K::Undefined);
    // DEFAULT/RESET return to the connection's startup value, which the
    // proxy pins (client_encoding, standard_conforming_strings) or which
    // cannot be looser than the role's own (row_security).
    let resets = matches!(kind, K::VarSetDefault | K::VarReset);
    let value = match (kind, s.args.as_slice()) {
        (K::VarSetValue, [one]) => constant(one),
        _ => None,
    };
    let ok = match p {
        Protected::Role | Protected::SessionAuthorization => false,
        Protected::RowSecurity | Protected::StandardConformingStrings => {
            resets || value.as_deref().is_some_and(settings::is_on)
        }
        Protected::ClientEncoding => resets || value.as_deref().is_some_and(settings::is_utf8_name),
    };
    if ok {
        Decision::allow(Class::Session)
    } else {
        settings::refusal(p, "SET")
    }
}

/// A constant's value as text (`'on'`, `on`, `1`, `true`).
fn constant(node: &protobuf::Node) -> Option<String> {
    use protobuf::a_const::Val;
    let Some(N::AConst(c)) = &node.node else {
        return None;
    };
    match c.val.as_ref()? {
        Val::Sval(s) => Some(s.sval.clone()),
        Val::Ival(i) => Some(i.ival.to_string()),
        Val::Boolval(b) => Some(if b.boolval { "on" } else { "off" }.to_owned()),
        _ => None,
    }
}

/// `SELECT set_config(name, '…', …) FROM pg_settings WHERE name = '…'`
/// (what `pg_dump` sends for `restrict_nonsystem_relation_kind`), and
/// nothing else: the only rows are those whose `name` equals the constant,
/// so the call sets that one setting, which must be ordinary. Every other
/// part of the statement must be absent. (`pg_settings` is the catalog
/// view; a runtime session cannot create a relation that would shadow it.)
fn pinned_set_config(node: &N) -> bool {
    let N::SelectStmt(s) = node else {
        return false;
    };
    if !only_target_from_where(s) {
        return false;
    }
    let ([target], [from], Some(filter)) = (
        s.target_list.as_slice(),
        s.from_clause.as_slice(),
        s.where_clause.as_deref(),
    ) else {
        return false;
    };
    is_plain_set_config(target)
        && is_pg_settings(from)
        && pinned_name(filter).is_some_and(|setting| settings::is_ordinary_name(&setting))
}

/// The `SELECT` has nothing but a target list, `FROM` and `WHERE`.
fn only_target_from_where(s: &protobuf::SelectStmt) -> bool {
    let rest = protobuf::SelectStmt {
        target_list: Vec::new(),
        from_clause: Vec::new(),
        where_clause: None,
        ..s.clone()
    };
    let plain = protobuf::SelectStmt {
        op: protobuf::SetOperation::SetopNone as i32,
        limit_option: protobuf::LimitOption::Default as i32,
        ..Default::default()
    };
    rest == plain
}

/// The target is an unlabelled `[pg_catalog.]set_config(name, <constant>,
/// <constant>)` with no aggregate or `VARIADIC` decoration.
fn is_plain_set_config(target: &protobuf::Node) -> bool {
    let call = match &target.node {
        Some(N::ResTarget(t)) if t.name.is_empty() && t.indirection.is_empty() => {
            match t.val.as_deref().and_then(|v| v.node.as_ref()) {
                Some(N::FuncCall(f)) => f,
                _ => return false,
            }
        }
        _ => return false,
    };
    let plain_call = call.agg_order.is_empty()
        && call.agg_filter.is_none()
        && call.over.is_none()
        && !call.agg_within_group
        && !call.agg_star
        && !call.agg_distinct
        && !call.func_variadic;
    let funcname = names(&call.funcname);
    let set_config = match funcname.as_slice() {
        [f] => f == "set_config",
        [schema, f] => schema == "pg_catalog" && f == "set_config",
        _ => false,
    };
    let args_ok = matches!(
        call.args.as_slice(),
        [name, value, local] if is_name_column(name) && constant(value).is_some() && constant(local).is_some()
    );
    plain_call && set_config && args_ok
}

/// `FROM [pg_catalog.]pg_settings` without an alias.
fn is_pg_settings(from: &protobuf::Node) -> bool {
    matches!(
        &from.node,
        Some(N::RangeVar(r)) if r.catalogname.is_empty()
            && (r.schemaname.is_empty() || r.schemaname == "pg_catalog")
            && r.relname == "pg_settings"
            && r.alias.is_none()
    )
}

/// The setting a `WHERE name = '<setting>'` filter pins.
fn pinned_name(filter: &protobuf::Node) -> Option<String> {
    match &filter.node {
        Some(N::AExpr(e))
            if e.kind == protobuf::AExprKind::AexprOp as i32 && names(&e.name) == ["="] =>
        {
            let column = e.lexpr.as_deref().is_some_and(is_name_column);
            match e.rexpr.as_deref() {
                Some(value) if column => string_constant(value),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A bare column reference `name`.
fn is_name_column(node: &protobuf::Node) -> bool {
    matches!(&node.node, Some(N::ColumnRef(c)) if names(&c.fields) == ["name"] && c.fields.len() == 1)
}

/// The value of a string constant (not a number or boolean).
fn string_constant(node: &protobuf::Node) -> Option<String> {
    match &node.node {
        Some(N::AConst(c)) => match c.val.as_ref()? {
            protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Every `set_config` call in the statement must have a constant, ordinary
/// setting name. Walked as JSON: only statements naming `set_config` get
/// here, and the JSON form lets one small function find every call.
fn set_config_calls(node: &N) -> Option<Decision> {
    let Ok(tree) = serde_json::to_value(node) else {
        return Some(Decision::refuse(
            Class::Unparseable,
            "the statement could not be read",
        ));
    };
    let mut stack = vec![&tree];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(call) = map.get("FuncCall")
                    && let Some(refusal) = set_config_call(call)
                {
                    return Some(refusal);
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    None
}

fn set_config_call(call: &serde_json::Value) -> Option<Decision> {
    let last = call
        .pointer("/funcname")
        .and_then(|f| f.as_array())
        .and_then(|f| f.last())
        .and_then(|n| n.pointer("/node/String/sval"))
        .and_then(|s| s.as_str())?;
    if !last.eq_ignore_ascii_case("set_config") {
        return None;
    }
    let name = call
        .pointer("/args/0/node/AConst/val/Sval/sval")
        .and_then(|s| s.as_str());
    let plain = call.pointer("/func_variadic").and_then(|v| v.as_bool()) != Some(true)
        && call.pointer("/agg_star").and_then(|v| v.as_bool()) != Some(true);
    match name {
        Some(name) if plain => {
            settings::protected(name).map(|p| settings::refusal(p, "set_config"))
        }
        _ => Some(Decision::refuse(
            Class::RlsToggle,
            "set_config with a setting name that is not a constant is not allowed on a runtime session",
        )),
    }
}

// ---------------------------------------------------------------------
// The complete walk.

/// Walks every field of a parse tree, collecting the first refusal.
#[derive(Default)]
struct Walk {
    /// (struct, field) of every struct being serialized, outermost first.
    path: Vec<(&'static str, &'static str)>,
    /// Statements (`…Stmt` nodes) entered, the top-level one included.
    statements: usize,
    refusal: Option<Decision>,
    /// The name `set_config` was seen (checked structurally afterwards).
    set_config: bool,
}

/// Structs that only wrap: a name string's owner is the nearest other one.
const WRAPPERS: &[&str] = &["Node", "String", "List"];

/// Nested statements that may appear inside an allowed one.
const NESTED_OK: &[&str] = &[
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
    "DeclareCursorStmt",
    "ExecuteStmt",
];

impl Walk {
    fn owner(&self) -> Option<(&'static str, &'static str)> {
        self.path
            .iter()
            .rev()
            .find(|(s, _)| !WRAPPERS.contains(s))
            .copied()
    }

    fn refuse(&mut self, d: Decision) {
        if self.refusal.is_none() {
            self.refusal = Some(d);
        }
    }

    fn enter(&mut self, name: &'static str) {
        if name == "IntoClause" && self.owner() != Some(("CreateTableAsStmt", "into")) {
            self.refuse(Decision::refuse(
                Class::Ddl,
                "DDL is not allowed on a runtime session (SELECT INTO creates a table)",
            ));
        }
        if name.ends_with("Stmt") && name != "RawStmt" {
            self.statements += 1;
            if self.statements > 1 && !NESTED_OK.contains(&name) {
                self.refuse(Decision::refuse(
                    Class::Ddl,
                    "DDL is not allowed on a runtime session (a nested statement outside the allow-list)",
                ));
            }
        }
        self.path.push((name, ""));
    }

    fn field(&mut self, field: &'static str) {
        if let Some(top) = self.path.last_mut() {
            top.1 = field;
        }
    }

    fn leave(&mut self) {
        self.path.pop();
    }

    /// A string value somewhere in the tree.
    fn string(&mut self, v: &str) {
        let Some(owner) = self.owner() else {
            return;
        };
        if is_literal(owner) {
            return;
        }
        if v.eq_ignore_ascii_case("set_config") {
            // Legitimate only as a call's name; checked structurally.
            if owner == ("FuncCall", "funcname") {
                self.set_config = true;
            } else {
                self.refuse(Decision::refuse(
                    Class::RlsToggle,
                    "set_config may only be called with a constant ordinary setting name",
                ));
            }
            return;
        }
        if let Some(entry) = denylist::denied(v) {
            self.refuse(Decision::refuse(
                Class::DangerousFunction,
                format!(
                    "function {entry} is not allowed on a runtime session ({})",
                    denylist::why(entry)
                ),
            ));
            return;
        }
        if owner.1 == "relname" && v.eq_ignore_ascii_case("pg_settings") && self.writes_relation() {
            self.refuse(Decision::refuse(
                Class::RlsToggle,
                "writing pg_settings changes settings and is not allowed on a runtime session",
            ));
        }
    }

    /// The RangeVar being read is the target of INSERT/UPDATE/DELETE/MERGE.
    fn writes_relation(&self) -> bool {
        let n = self.path.len();
        n >= 2
            && matches!(
                self.path[n - 2],
                (
                    "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt",
                    "relation"
                )
            )
    }
}

/// Fields that hold literal text rather than names.
fn is_literal(owner: (&str, &str)) -> bool {
    matches!(
        owner,
        ("AConst", _)
            | ("NotifyStmt", "payload")
            | ("TransactionStmt", "gid")
            | ("CopyStmt", "filename")
    )
}

#[derive(Debug)]
struct WalkError;

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("parse tree walk failed")
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        WalkError
    }
}

type R = Result<(), WalkError>;

/// Numbers, booleans, bytes and unit structs hold no names: the walk
/// skips them.
macro_rules! skip_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, _: $ty) -> R {
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut Walk {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = &'a mut Walk;
    type SerializeTuple = &'a mut Walk;
    type SerializeTupleStruct = &'a mut Walk;
    type SerializeTupleVariant = &'a mut Walk;
    type SerializeMap = Impossible<(), WalkError>;
    type SerializeStruct = &'a mut Walk;
    type SerializeStructVariant = &'a mut Walk;

    skip_scalars!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_bytes: &[u8],
        serialize_unit_struct: &'static str,
    );
    fn serialize_str(self, v: &str) -> R {
        self.string(v);
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, WalkError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, WalkError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, WalkError> {
        // The parse tree has no maps; fail closed if one ever appears.
        Err(WalkError)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, WalkError> {
        self.enter(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, WalkError> {
        self.enter(variant);
        Ok(self)
    }
}

/// Sequences and tuples: every element is walked, in the current place.
macro_rules! walk_elements {
    ($($kind:ident::$method:ident),* $(,)?) => {$(
        impl ser::$kind for &mut Walk {
            type Ok = ();
            type Error = WalkError;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
                value.serialize(&mut **self)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    )*};
}

walk_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// Structs: each field's name is the place of what it holds
/// ([`Walk::field`]); the struct is left at its end.
macro_rules! walk_fields {
    ($($kind:ident),* $(,)?) => {$(
        impl ser::$kind for &mut Walk {
            type Ok = ();
            type Error = WalkError;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> R {
                self.field(key);
                value.serialize(&mut **self)
            }
            fn end(self) -> R {
                self.leave();
                Ok(())
            }
        }
    )*};
}

walk_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    fn first(sql: &str) -> Decision {
        read(sql, Reading::Standard)
            .expect("parses")
            .into_iter()
            .find(|d| !d.allowed || d.need.is_some())
            .unwrap_or_else(|| Decision::allow(Class::Read))
    }

    fn refused(sql: &str) -> bool {
        !first(sql).allowed
    }

    #[test]
    fn attribute_notation_reaches_no_denied_function() {
        for sql in [
            "SELECT x.pg_read_file FROM btrim('/etc/hostname') AS x",
            "SELECT pg_catalog.pg_read_file FROM btrim('/etc/hostname') AS pg_catalog",
            "SELECT (btrim('/etc/hostname')).pg_read_file",
            "SELECT substring('a' FROM x.pg_ls_dir) FROM btrim('.') x",
            "SELECT trim(FROM x.pg_read_file) FROM btrim('/etc/hostname') x",
            "SELECT 1 IS DISTINCT FROM x.pg_terminate_backend FROM (SELECT 1) x(a)",
            "SELECT x.\"pg_read_file\" FROM btrim('/etc/hostname') x",
            "SELECT x.U&\"pg\\005fread_file\" FROM btrim('/etc/hostname') x",
            "EXPLAIN ANALYZE SELECT x.pg_read_file FROM btrim('/etc/hostname') x",
            "COPY (SELECT x.pg_read_file FROM btrim('/etc/hostname') x) TO STDOUT",
            "DECLARE c CURSOR FOR SELECT x.lo_import FROM btrim('/etc/hostname') x",
            "PREPARE p AS SELECT x.pg_read_file FROM btrim('/etc/hostname') x",
            "INSERT INTO t SELECT x.pg_read_file FROM btrim('/etc/hostname') x",
            "WITH w AS (SELECT x.pg_read_file FROM btrim('/etc/hostname') x) SELECT * FROM w",
            "SELECT * FROM pg_file_settings",
            "SELECT * FROM pg_catalog.pg_hba_file_rules",
            "SELECT query_to_xml('select 1', true, true, '')",
        ] {
            assert_eq!(first(sql).class, Class::DangerousFunction, "{sql}");
        }
    }

    #[test]
    fn select_into_is_found_however_it_is_spelled() {
        for sql in [
            "SELECT 1 AS insert INTO t",
            "SELECT 1 AS merge INTO t",
            "SELECT 1 insert INTO t",
            "SELECT 'a'\n'b' INTO t",
            "SELECT 1 INTO TEMP t",
            "SELECT 1 INTO UNLOGGED t",
            "PREPARE transaction AS SELECT 1 INTO t",
            "SELECT 1 UNION SELECT 2 INTO t",
            "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
        ] {
            assert!(refused(sql), "{sql}");
        }
    }

    #[test]
    fn settings_and_copy() {
        for sql in [
            "SET row_security = off",
            "SET LOCAL row_security TO off",
            "SET ROLE postgres",
            "RESET ROLE",
            "SET SESSION AUTHORIZATION postgres",
            "SET client_encoding = 'SJIS'",
            "SET NAMES 'LATIN1'",
            "SET standard_conforming_strings = off",
            "SELECT set_config('row_security', 'off', false)",
            "SELECT set_config(name, 'off', false) FROM pg_settings",
            "SELECT pg_catalog.set_config($1, 'x', false)",
            "SELECT x.set_config FROM t x",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'row_security'",
            "WITH u AS (UPDATE pg_catalog.pg_settings SET setting = 'off' RETURNING 1) SELECT 1",
            "COPY t TO '/tmp/x'",
            "COPY t FROM PROGRAM 'true'",
            "DO $$ BEGIN END $$",
            "CREATE TABLE t (a int)",
            "GRANT SELECT ON t TO public",
        ] {
            assert!(refused(sql), "{sql}");
        }
        for sql in [
            "SET row_security = on",
            "RESET row_security",
            "SET client_encoding = 'UTF8'",
            "SET NAMES 'unicode'",
            "SET standard_conforming_strings = on",
            "SELECT set_config('app.tenant', '42', false)",
            "INSERT INTO t (v) SELECT setting FROM pg_settings WHERE name = 'work_mem'",
            "SELECT dblink_id, 'pg_read_file' FROM t",
            "COPY t FROM STDIN",
            "COPY (SELECT 1) TO STDOUT",
            "NOTIFY ch, 'pg_read_file'",
            "BEGIN; SELECT 1; COMMIT",
            "SELECT pg_advisory_lock(1)",
        ] {
            assert!(!refused(sql), "{sql}");
        }
    }

    #[test]
    fn switchable_families_name_their_switch() {
        assert_eq!(
            first("CREATE TEMP TABLE t (a int)").need,
            Some(Need::TempTables)
        );
        assert_eq!(
            first("CREATE TEMP TABLE t AS SELECT 1").need,
            Some(Need::TempTables)
        );
        assert_eq!(first("TRUNCATE t").need, Some(Need::Truncate));
        assert_eq!(first("VACUUM t").need, Some(Need::Maintenance));
        assert_eq!(
            first("CALL app.p()").need,
            Some(Need::Call(vec!["app".into(), "p".into()]))
        );
        assert!(refused(
            "CREATE TEMP TABLE t AS SELECT x.pg_read_file FROM btrim('') x"
        ));
    }

    #[test]
    fn the_other_reading_of_backslashes() {
        // One string under `on`; under `off`, `\'` escapes and the DDL runs.
        let sql = "SELECT 'a\\'' ; CREATE TABLE pwn(); --'";
        assert_eq!(read(sql, Reading::Standard).map(|s| s.len()), Ok(1));
        let off = read(sql, Reading::NoStandardStrings).expect("parses");
        assert_eq!(off.len(), 2);
        assert!(!off[1].allowed);
        let sql = "SELECT 'a\\' ; SELECT 1 --'";
        let on = read(sql, Reading::Standard).expect("parses");
        assert!(on.iter().all(|d| d.allowed));
    }

    #[test]
    fn deep_nesting_is_refused_not_crashed() {
        // Redundant parentheses leave no trace in the tree.
        let parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(read(&parens, Reading::Standard).is_ok_and(|s| s.iter().all(|d| d.allowed)));
        for deep in [
            format!(
                "SELECT 1 WHERE {}true{}",
                "NOT (".repeat(5000),
                ")".repeat(5000)
            ),
            format!("SELECT {}1{}", "ARRAY[".repeat(3000), "]".repeat(3000)),
        ] {
            let verdict = read(&deep, Reading::Standard);
            assert!(verdict.is_err() || verdict.is_ok_and(|s| s.iter().any(|d| !d.allowed)));
        }
        let chain = format!("SELECT 1{}", "+1".repeat(20000));
        let verdict = read(&chain, Reading::Standard);
        assert!(verdict.is_err() || verdict.is_ok_and(|s| s.iter().any(|d| !d.allowed)));
    }
}
