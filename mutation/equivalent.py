"""Surviving mutants judged equivalent: (module, line before, line after) → why.

Where the same line occurs twice in a module (``continue``), the key also holds the line
number, (module, number, before, after): when the code moves, the mutant shows up as not
judged again, to be read again.

A mutant lands here only after reading it: it changes nothing a caller, an operator or
the code below can observe. mutation/run.py lists every other survivor as a missing test.
"""

from __future__ import annotations

_STATUS = "server/src/datamorph_gateway/status.py"
_DURATION = (
    "duration = duration_pb2.Duration(seconds=int(delay), nanos=int((delay % 1) * 1_000_000_000))"
)

_NAMES = "server/src/datamorph_gateway/db/names.py"
_WIRE = "server/src/datamorph_gateway/wire.py"
_FAST_PATH = (
    "``append_object_rows``' fast path for text, NULL and finite floats: without it a value"
    " takes ``set_value``, which stores the same thing; only the speed differs (bench/)"
)
_DATETIMES = "server/src/datamorph_gateway/db/decoding/datetimes.py"
_SPACE_AT_3 = (
    "differs only for text with its first space at offset 3 and a '-' at offset 0, which no"
    " DateStyle's output has (ISO's date part alone is 10 characters): equal on every value"
    " PostgreSQL sends"
)
_ARRAYS = "server/src/datamorph_gateway/db/decoding/arrays.py"
_FOUND_PAST_0 = (
    "``end`` and ``brace`` are found searching from past the opening '{', at offset 1 or"
    " later, and differ when both are found unless the delimiter were '}' itself (every"
    " built-in type's is ',' or ';'): each bound moved by one holds exactly when the"
    " original does"
)
_CASTERS = "server/src/datamorph_gateway/db/decoding/casters.py"
_CATALOG = "server/src/datamorph_gateway/db/decoding/catalog.py"
_ANNOTATION = (
    "an annotation, which ``from __future__ import annotations`` leaves unevaluated (and"
    " dataclasses read as text); mypy (``make lint``) refuses the mutant"
)
_CONFIG = "server/src/datamorph_gateway/config.py"
_SECTIONS = "server/src/datamorph_gateway/config_sections.py"
_CHECKS = "server/src/datamorph_gateway/config_checks.py"
_POLICY = "server/src/datamorph_gateway/auth/policy.py"
_SQLRULES = "server/src/datamorph_gateway/db/sqlrules.py"
_SQLPOLICY = "server/src/datamorph_gateway/db/sqlpolicy.py"
_ABSENT = (
    "the default stands for a field the node lacks (libpg_query writes it on every such"
    " node): '' and 'XXXX' alike match nothing the code compares it with, the same answer"
)
_NOT_STRICT = (
    "every source read without ``strict`` is filtered to known keys first (``known_env``, "
    "``normalize_secret``), so no unknown key reaches the check ``strict`` guards"
)

EQUIVALENT: dict[tuple[str | int, ...], str] = {
    **{
        (_POLICY, f"{field}: {kind} | None = None", f"{field}: {kind} & None = None"): _ANNOTATION
        for field, kind in (
            ("rate_limit_per_s", "float"),
            ("jwt", "JwtConfig"),
            ("aws_iam", "IamConfig"),
        )
    },
    (
        "server/src/datamorph_gateway/auth/keys.py",
        "_KEY_BYTES = 32  # 256 bits",
        "_KEY_BYTES = None  # 256 bits",
    ): "secrets.token_urlsafe(None) draws secrets' default entropy, 32 bytes: the same 256-bit"
    " keys (the test pins their length)",
    (
        _POLICY,
        'def load_policy(*, path: str = "", text: str = "") -> Policy:',
        'def load_policy(*, path: str = "", text: str = "XXXX") -> Policy:',
    ): "with neither a file nor text (no caller does: the authenticator passes both), '' and"
    " 'XXXX' are both JSON that fails at its first character: the same ConfigError, 'Expecting"
    " value at line 1'",
    (
        _CONFIG,
        "SecretLoader = Callable[[AwsSettings], Mapping[str, Any]]",
        "SecretLoader = None",
    ): "a type alias read only by annotations, which ``from __future__ import annotations``"
    " leaves unevaluated; mypy (``make lint``) refuses the mutant",
    (
        _CONFIG,
        "_apply(values, known_env, strict=False)",
        "_apply(values, known_env, strict=True)",
    ): _NOT_STRICT,
    (
        _CONFIG,
        "_apply(values, normalize_secret(secret_loader(staged.aws)), strict=False)",
        "_apply(values, normalize_secret(secret_loader(staged.aws)), strict=True)",
    ): _NOT_STRICT,
    (_CONFIG, 195, "continue", "break"): _NOT_STRICT,
    **{
        (
            _SECTIONS,
            f'{name} = quote(self.{key}, safe="")',
            f'{name} = quote(self.{key}, safe="XXXX")',
        ): "quote() never escapes an ASCII letter, so adding X to the safe "
        "characters changes no DSN"
        for name, key in (
            ("user", "rds_username"),
            ("password", "rds_password"),
            ("dbname", "rds_dbname"),
        )
    },
    **{
        (_NAMES, "if close < 0:", after): "``close`` is found searching from just past the"
        " opening quote, at offset 1 or later: it is never 0, so ``<= 0`` and ``< 1`` hold"
        " exactly when ``< 0`` does"
        for after in ("if close <= 0:", "if close < 1:")
    },
    (
        _DATETIMES,
        'return t + ":00" if t[-3] in "+-" else t',
        'return t + ":00" if t[-3] in "XX+-XX" else t',
    ): "the character three from the end of a time zone offset is a digit, ':', '+' or '-',"
    " never an X",
    **{
        (_DATETIMES, 'if p < 3 or s[p - 3] != "-" or s[-1] == "C":', after): _SPACE_AT_3
        for after in (
            'if p <= 3 or s[p - 3] != "-" or s[-1] == "C":',
            'if p < 4 or s[p - 3] != "-" or s[-1] == "C":',
        )
    },
    (
        _ARRAYS,
        "Decoder = Callable[[str], Any]  # a non-NULL value's fetched text → its JSON value",
        "Decoder = None  # a non-NULL value's fetched text → its JSON value",
    ): "a type alias read only by annotations, which ``from __future__ import annotations``"
    " leaves unevaluated; mypy (``make lint``) refuses the mutant",
    **{
        (_ARRAYS, before, after): _FOUND_PAST_0
        for before, after in (
            ("if end < 0 or 0 <= brace < end:", "if end <= 0 or 0 <= brace < end:"),
            ("if end < 0 or 0 <= brace < end:", "if end < 1 or 0 <= brace < end:"),
            ("if end < 0 or 0 <= brace < end:", "if end < 0 or 1 <= brace < end:"),
            ("if end < 0 or 0 <= brace < end:", "if end < 0 or 0 < brace < end:"),
            ("if end < 0 or 0 <= brace < end:", "if end < 0 or 0 <= brace <= end:"),
            ("if end < 0:", "if end <= 0:"),
            ("if end < 0:", "if end < 1:"),
        )
    },
    **{
        (
            _CASTERS,
            '_PSYCOPG2_TEXT: Final = frozenset({"STRING", "UNICODE", "UNKNOWN"})',
            f"_PSYCOPG2_TEXT: Final = frozenset({{{kept}}})",
        ): "psycopg2's UNICODE and UNKNOWN casters give the text as a str, as the"
        " ``decode_text`` caster that would then replace them does: the same values"
        for kept in ('"STRING", "XXUNICODEXX", "UNKNOWN"', '"STRING", "UNICODE", "XXUNKNOWNXX"')
    },
    (_CASTERS, "_installed_globally = False", "_installed_globally = None"): "only ever"
    " read as a truth value, and None is as false as False",
    (
        _CATALOG,
        "_BUILTIN_RULES: Final[dict[int, Decoder | None]] = {",
        "_BUILTIN_RULES: Final[dict[int, Decoder & None]] = {",
    ): _ANNOTATION,
    (
        _CATALOG,
        "decode: Callable[[Any], Any] | None = None",
        "decode: Callable[[Any], Any] & None = None",
    ): _ANNOTATION,
    (
        _SQLRULES,
        'arm: dict[str, Any] | None = node if node_type == "SelectStmt" else None',
        'arm: dict[str, Any] & None = node if node_type == "SelectStmt" else None',
    ): _ANNOTATION,
    (
        _CATALOG,
        "loaded = self._load(conn, [o for o in oids if o not in BUILTIN_TYPES and o not in types])",
        "loaded = self._load(conn, [o for o in oids if o not in BUILTIN_TYPES or o not in types])",
    ): "also asks again, in the same one query, for types already cached: the same answer"
    " and the same number of queries",
    (_WIRE, "t = type(v)", "t = None"): _FAST_PATH,
    (_WIRE, "elif t is float and v - v == 0:", "elif t is float and v + v == 0:"): _FAST_PATH,
    (_WIRE, "elif t is float and v - v == 0:", "elif t is float and v - v == 1:"): _FAST_PATH,
    (_CHECKS, 158, "continue", "break"): "an empty TLS_CERT_FILE implies an empty TLS_KEY_FILE"
    " and TLS_CLIENT_CA_FILE (both checked just before), and the CA file is the last: once one"
    " is empty, no later one is set, so stopping the loop reads nothing it would have read",
    (
        _STATUS,
        _DURATION,
        _DURATION.replace("1_000_000_000", "1000000001"),
    ): "for a delay in whole nanoseconds, k/10⁹ s, int(k/10⁹ · (10⁹ + 1)) = k + int(k/10⁹) = k:"
    " the same nanos",
    (
        _STATUS,
        "break",
        "continue",
    ): "``used`` only grows, so once one violation is over the bound every later one is too:"
    " ``continue`` keeps none of them, as ``break`` does",
    **{
        (_SQLRULES, before, before.replace('""', '"XXXX"', 1)): _ABSENT
        for before in (
            'kind = _TRANSACTION_KINDS.get(str(node.get("kind", "")), "transaction control")',
            'kind = str(node.get("kind", ""))',
            'name = str(relation.get("relname", "")).lower()',
            'kind == "RangeVar" and str(fields.get("relname", "")).lower() == "pg_settings"',
        )
    },
    **{
        (_SQLPOLICY, before, before.replace('""', '"XXXX"', 1)): _ABSENT
        for before in (
            'name = str(node.get("sval", "")).lower()',
            'return self._literal_kind(str(node["sval"].get("sval", "")), read_only, depth)',
            'condition = str(node.get("condname", "")).lower()',
            'query = str(node.get("query", ""))',
        )
    },
    (
        _SQLPOLICY,
        'query, int(node.get("parseMode", 0)), read_only, depth',
        'query, int(node.get("parseMode", 1)), read_only, depth',
    ): "libpg_query writes parseMode on every PLpgSQL_expr, 0 included: the default is never read",
    **{
        (_SQLPOLICY, before, after): "only which answers are remembered (their cost is"
        " bench/'s): every text gets the same answer, remembered or not"
        for before, after in (
            ("_CACHED_TEXT_CHARS = 8192", "_CACHED_TEXT_CHARS = 8193"),
            (
                "self._check_cached = lru_cache(maxsize=512)(self._check)",
                "self._check_cached = lru_cache(maxsize=513)(self._check)",
            ),
            (
                "if sum(len(statement.text) for statement in script.statements)"
                " <= _CACHED_TEXT_CHARS:",
                "if sum(len(statement.text) for statement in script.statements)"
                " < _CACHED_TEXT_CHARS:",
            ),
        )
    },
}
