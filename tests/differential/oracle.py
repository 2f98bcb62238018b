#!/usr/bin/env python3
"""Differential oracle for rolegate's runtime policy (tests/differential.rs).

Reads statement texts, parses each with PostgreSQL's own parser (pglast,
which ships libpg_query), and says for each whether the issue's rule requires
rolegate to refuse it.

Usage: oracle.py INPUT OUTPUT

INPUT is JSON lines. The first line is a header
``{"denied": [...]}`` (rolegate's DENIED_FUNCTIONS: lower-case names, an
entry ending in ``*`` is a prefix). Every further line is ``{"sql": "..."}``.
OUTPUT gets one JSON line per text, in order:

* ``{"v": "unparseable", "error": "..."}`` — PostgreSQL rejects the text;
* ``{"v": "harmless"}`` — nothing in its parse tree must be refused;
* ``{"v": "refuse", "reasons": [{"group": "...", "detail": "..."}, ...]}``.

Every line also has ``"c"``: PostgreSQL's scanner's constant tokens, as
``[start, end, kind]`` with byte offsets (end exclusive) and kind ``S``
(a string, any flavour), ``I`` (integer) or ``F`` (other numeric); the test
checks rolegate's verdict-cache folding against them. Empty when the text has
no quote or digit or does not scan.

The rule (per text; a text is refused if any of its statements is):

1. an IntoClause anywhere except as the target of CREATE TABLE AS
   (SELECT ... INTO, also nested in EXPLAIN / PREPARE / DECLARE / COPY / CTEs);
2. a denied name as the last element of a FuncCall's funcname, as any String
   field of a ColumnRef (attribute notation ``t.f`` calls ``f(t)``), in an
   A_Indirection's indirection list, or as a RangeVar relname; the views
   pg_file_settings, pg_hba_file_rules, pg_ident_file_mappings and pg_config
   count as denied names too; ``set_config`` whose first argument is not a
   string constant or names a protected setting — except in exactly
   ``SELECT set_config(name, <const>, <const>) FROM pg_settings WHERE name =
   '<setting>'`` (what pg_dump sends), where the rows and so the name are
   pinned to that one setting, which must not be protected;
3. a VariableSetStmt (SET / RESET) of a protected setting: row_security to
   anything but on/true/yes/1 (DEFAULT and RESET are not "off"), role,
   session_authorization, client_encoding other than a UTF8 spelling,
   standard_conforming_strings other than on;
4. a top-level statement type outside the allow-list (COPY only without a
   file name or program, EXPLAIN only of an allowed statement).

The walk over pglast's JSON is generic: every dict and list is visited, so no
node type can hide a child. A node's type is read from its wrapper key
(``{"FuncCall": {...}}``) or, for the typed pointer fields that libpg_query
writes without a wrapper (``SelectStmt.intoClause``, ``InsertStmt.relation``,
``SelectStmt.larg``…), from pglast's own slot type table (``pglast.ast``).
"""

import json
import sys

try:
    import pglast
    import pglast.ast
    from pglast.parser import parse_sql_json, scan, ParseError
except ImportError as exc:  # pragma: no cover - reported by the Rust test
    sys.stderr.write(
        "pglast is not installed (%s): run\n"
        "  python3 -m pip install -r tests/differential/requirements.txt\n" % exc
    )
    sys.exit(3)

ALLOWED_TOP = {
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
    "TransactionStmt",
    "VariableSetStmt",
    "VariableShowStmt",
    "PrepareStmt",
    "ExecuteStmt",
    "DeallocateStmt",
    "DeclareCursorStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "ListenStmt",
    "NotifyStmt",
    "UnlistenStmt",
    "DiscardStmt",
    "LockStmt",
    "CopyStmt",
    "ExplainStmt",
    # Not in the list, added on purpose: SET CONSTRAINTS only changes
    # when this transaction checks deferrable constraints (transaction
    # control, like SET TRANSACTION, which is a VariableSetStmt), and
    # rolegate documents it as allowed.
    "ConstraintsSetStmt",
}

EXTRA_DENIED = ["pg_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings", "pg_config"]

PROTECTED = {
    "row_security",
    "role",
    "session_authorization",
    "client_encoding",
    "standard_conforming_strings",
}

CONTAINERS = {"CommonTableExpr", "SubLink", "RangeSubselect"}


def slot_types():
    """{node type: {field: pointed-to node type}} for typed pointer fields."""
    table = {}
    for name in dir(pglast.ast):
        cls = getattr(pglast.ast, name)
        slots = getattr(cls, "__slots__", None)
        if not isinstance(cls, type) or not isinstance(slots, dict):
            continue
        fields = {}
        for field, info in slots.items():
            c_type = getattr(info, "c_type", None)
            if not isinstance(c_type, str) or not c_type.endswith("*"):
                continue
            target = c_type[:-1]
            if target in ("Node", "Expr", "List", "char") or not hasattr(pglast.ast, target):
                continue
            fields[field] = target
        table[name] = fields
    return table


SLOTS = slot_types()


class Denied:
    def __init__(self, entries):
        self.exact = set()
        self.prefixes = []
        for e in list(entries) + EXTRA_DENIED:
            if e.endswith("*"):
                self.prefixes.append(e[:-1])
            else:
                self.exact.add(e)

    def match(self, name):
        # Names in the parse tree are as PostgreSQL resolves them (unquoted
        # folded to lower case, quoted kept): compare exactly.
        if not isinstance(name, str):
            return False
        return name in self.exact or any(name.startswith(p) for p in self.prefixes)


def const_value(node):
    """(kind, value) of an A_Const wrapper dict, or None if not a constant."""
    if not isinstance(node, dict) or list(node) != ["A_Const"]:
        return None
    c = node["A_Const"]
    if "sval" in c:
        return ("str", c["sval"].get("sval", ""))
    if "ival" in c:
        return ("int", c["ival"].get("ival", 0))
    if "fval" in c:
        return ("float", c["fval"].get("fval", ""))
    if "boolval" in c:
        return ("bool", c["boolval"].get("boolval", False))
    if "bsval" in c:
        return ("bits", c["bsval"].get("bsval", ""))
    if c.get("isnull"):
        return ("null", None)
    return ("unknown", None)


def is_name_column(node):
    """A bare column reference ``name``."""
    return (isinstance(node, dict) and list(node) == ["ColumnRef"]
            and list(without_location(node["ColumnRef"])) == ["fields"]
            and node["ColumnRef"]["fields"] == [{"String": {"sval": "name"}}])


def without_location(d):
    return {k: v for k, v in d.items() if k != "location"}


def pinned_set_config(typ, body):
    """The pg_dump shape: one set_config(name, const, const) target, FROM
    the bare or pg_catalog-qualified pg_settings, WHERE name = '<setting>'
    with an unprotected setting, and nothing else in the statement."""
    if typ != "SelectStmt":
        return False
    if set(body) != {"targetList", "fromClause", "whereClause", "limitOption", "op"}:
        return False
    if body["op"] != "SETOP_NONE" or body["limitOption"] != "LIMIT_OPTION_DEFAULT":
        return False
    targets, froms, where = body["targetList"], body["fromClause"], body["whereClause"]
    if len(targets) != 1 or len(froms) != 1:
        return False
    target = targets[0].get("ResTarget")
    if not isinstance(target, dict) or set(without_location(target)) != {"val"}:
        return False
    call = target["val"].get("FuncCall") if isinstance(target["val"], dict) else None
    if not isinstance(call, dict) or set(without_location(call)) != {"funcname", "args", "funcformat"}:
        return False
    fname = [n.get("String", {}).get("sval") for n in call["funcname"]]
    if fname not in (["set_config"], ["pg_catalog", "set_config"]):
        return False
    args = call["args"]
    if len(args) != 3 or not is_name_column(args[0]) \
            or const_value(args[1]) is None or const_value(args[2]) is None:
        return False
    rel = froms[0].get("RangeVar")
    if not isinstance(rel, dict) or rel.get("relname") != "pg_settings" \
            or rel.get("schemaname", "pg_catalog") != "pg_catalog" \
            or "alias" in rel or "catalogname" in rel:
        return False
    expr = where.get("A_Expr") if isinstance(where, dict) else None
    if not isinstance(expr, dict) or expr.get("kind") != "AEXPR_OP" \
            or expr.get("name") != [{"String": {"sval": "="}}] \
            or not is_name_column(expr.get("lexpr")):
        return False
    setting = const_value(expr.get("rexpr"))
    return bool(setting and setting[0] == "str" and setting[1].lower() not in PROTECTED)


def is_utf8_name(value):
    cleaned = "".join(ch.lower() for ch in value if ch.isascii() and ch.isalnum())
    return value.isascii() and cleaned in ("utf8", "unicode")


def is_on(kind, value):
    if kind == "str":
        return value.lower() in ("on", "true", "yes", "1")
    if kind == "int":
        return value == 1
    return False


class Checker:
    def __init__(self, denied):
        self.denied = denied

    def check_text(self, tree):
        reasons = []
        for raw in tree.get("stmts", []):
            stmt = raw.get("stmt")
            if not stmt:
                continue
            (top, body), = stmt.items()
            self.top = top
            self.pinned = pinned_set_config(top, body)
            self.reasons = reasons
            self.allowed_statement(top, body, "")
            self.walk(top, body, [])
        return reasons

    def add(self, group, detail):
        self.reasons.append({"group": group, "detail": detail})

    # -- rule 4 -----------------------------------------------------------
    def allowed_statement(self, typ, body, prefix):
        if typ not in ALLOWED_TOP:
            self.add(
                "%sstatement type %s is not allowed" % (prefix, typ),
                "top-level %s" % typ,
            )
            return
        if typ == "CopyStmt":
            if body.get("filename") is not None or body.get("is_program"):
                self.add(
                    "%sCOPY to/from a server file or program" % prefix,
                    "COPY %s %r" % ("PROGRAM" if body.get("is_program") else "file",
                                    body.get("filename")),
                )
        if typ == "ExplainStmt":
            inner = body.get("query")
            if isinstance(inner, dict) and len(inner) == 1:
                (ityp, ibody), = inner.items()
                self.allowed_statement(ityp, ibody, "EXPLAIN: ")

    # -- rules 1-3, generic walk -------------------------------------------
    def where(self, stack):
        inner = [t for t in stack if t in CONTAINERS]
        w = "under %s" % self.top
        if inner:
            w += " inside %s" % inner[-1]
        return w

    def walk(self, typ, body, stack, ctas_target=False):
        """Visit one node (``body`` is its field dict, ``typ`` its type or None)."""
        if not isinstance(body, dict):
            return
        if typ is not None:
            self.node_rules(typ, body, stack, ctas_target)
            stack = stack + [typ]
        typed = SLOTS.get(typ, {}) if typ else {}
        for field, value in body.items():
            child_ctas = typ == "CreateTableAsStmt" and field == "into"
            self.value(value, typed.get(field), stack, child_ctas)

    def value(self, value, typ, stack, ctas_target=False):
        if isinstance(value, list):
            for item in value:
                self.value(item, None, stack)
        elif isinstance(value, dict):
            # A wrapper ({"FuncCall": {...}}) names its type, whatever the
            # field's declared type (``Expr*`` fields hold any node); field
            # names are never capitalised, so a one-key dict with a
            # capitalised key is always a wrapper.
            if len(value) == 1 and next(iter(value))[:1].isupper():
                (wtyp, wbody), = value.items()
                if isinstance(wbody, dict):
                    self.walk(wtyp, wbody, stack, ctas_target)
                else:
                    self.value(wbody, None, stack)
            elif typ is not None:
                self.walk(typ, value, stack, ctas_target)
            else:
                self.walk(None, value, stack)

    def strings(self, items):
        for item in items or []:
            if isinstance(item, dict) and "String" in item:
                yield item["String"].get("sval", "")

    def node_rules(self, typ, body, stack, ctas_target):
        d = self.denied
        if typ == "IntoClause" and not ctas_target:
            self.add(
                "SELECT ... INTO (IntoClause) %s" % self.where(stack),
                "INTO %s" % (body.get("rel") or {}).get("relname"),
            )
        elif typ == "FuncCall":
            names = list(self.strings(body.get("funcname")))
            last = names[-1] if names else None
            if d.match(last):
                self.add("denied function call (FuncCall)", ".".join(names))
            if last == "set_config":
                args = body.get("args") or []
                first = const_value(args[0]) if args else None
                if self.pinned and is_name_column(args[0]):
                    pass
                elif first is None or first[0] != "str":
                    self.add("set_config with a non-constant setting name", ".".join(names))
                elif first[1].lower() in PROTECTED:
                    self.add("set_config of a protected setting", first[1].lower())
        elif typ == "ColumnRef":
            names = list(self.strings(body.get("fields")))
            for n in names:
                if d.match(n):
                    how = "attribute notation" if len(names) > 1 else "bare column"
                    self.add("denied name in a ColumnRef (%s)" % how, ".".join(names))
                    break
        elif typ == "A_Indirection":
            for n in self.strings(body.get("indirection")):
                if d.match(n):
                    self.add("denied name in an A_Indirection ((expr).f)", n)
                    break
        elif typ == "RangeVar":
            if d.match(body.get("relname")):
                self.add("denied relation (RangeVar)", body.get("relname"))
        elif typ == "VariableSetStmt":
            self.variable_set(body)

    def variable_set(self, body):
        kind = body.get("kind")
        name = (body.get("name") or "").lower()
        if name not in PROTECTED or kind == "VAR_RESET_ALL":
            return
        args = body.get("args") or []
        vals = [const_value(a) for a in args]
        one = vals[0] if len(vals) == 1 and vals[0] is not None else None
        bad = False
        if name in ("role", "session_authorization"):
            bad = True
        elif name == "row_security":
            if kind == "VAR_SET_VALUE":
                bad = not (one and is_on(*one))
            elif kind in ("VAR_SET_DEFAULT", "VAR_RESET", "VAR_SET_CURRENT"):
                bad = False
            else:
                bad = True
        elif name == "client_encoding":
            bad = not (kind == "VAR_SET_VALUE" and one and one[0] == "str"
                       and is_utf8_name(one[1]))
        elif name == "standard_conforming_strings":
            bad = not (kind == "VAR_SET_VALUE" and one and is_on(*one))
        if bad:
            self.add(
                "SET/RESET of protected setting %s" % name,
                "%s %s %s" % (kind, name, [v[1] if v else None for v in vals]),
            )


CONST_KINDS = {"SCONST": "S", "USCONST": "S", "BCONST": "S", "XCONST": "S",
               "ICONST": "I", "FCONST": "F"}


def constants(sql):
    """PostgreSQL's constant tokens of ``sql`` as byte ranges."""
    if "'" not in sql and not any(c.isdigit() for c in sql):
        return []
    try:
        tokens = scan(sql)
    except Exception:  # a lexical error: nothing runs, nothing to compare
        return []
    out = []
    for t in tokens:
        kind = CONST_KINDS.get(t.name)
        if kind is None:
            continue
        # pglast reports character offsets, the end inclusive.
        start = len(sql[:t.start].encode())
        end = len(sql[:t.end + 1].encode())
        out.append([start, end, kind])
    return out


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: oracle.py INPUT OUTPUT\n")
        return 2
    with open(sys.argv[1], encoding="utf-8") as inp, \
            open(sys.argv[2], "w", encoding="utf-8") as out:
        header = json.loads(inp.readline())
        checker = Checker(Denied(header["denied"]))
        for line in inp:
            sql = json.loads(line)["sql"]
            # The server reads a query string only up to a NUL.
            sql = sql.split("\x00", 1)[0]
            consts = constants(sql)
            try:
                tree = json.loads(parse_sql_json(sql))
            except ParseError as exc:
                verdict = {"v": "unparseable", "error": str(exc)}
            except Exception as exc:  # e.g. stack depth: the server rejects it too
                verdict = {"v": "unparseable", "error": repr(exc)}
            else:
                reasons = checker.check_text(tree)
                verdict = {"v": "refuse", "reasons": reasons} if reasons else {"v": "harmless"}
            verdict["c"] = consts
            out.write(json.dumps(verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
