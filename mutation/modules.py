"""The modules under mutation testing, each with the tests that pin its part of the contract.

Focused tests only: a mutant costs one run of them, so a module lists the test files that
exercise it without a database where such tests exist. ``conftest`` is True when the tests
need the suite's fixtures (tests/conftest.py); otherwise pytest skips loading them.

Where a module's own tests run through a whole gateway (auth/policy.py, db/sqlpolicy.py,
db/sqlrules.py), a contract test file calls it directly and is its focused tests; the
gateway tests stay in the suite.
"""

from __future__ import annotations

from dataclasses import dataclass

SRC = "server/src/datamorph_gateway"


@dataclass(frozen=True)
class Module:
    path: str
    tests: tuple[str, ...]
    conftest: bool = False
    args: tuple[str, ...] = ()  # more pytest arguments, e.g. -k to leave slow tests out
    # The tests need a PostgreSQL: DATABASE_URL's, or one embedded server for the whole run
    # (a child's own would cost an initdb per mutant). Implies ``conftest``.
    database: bool = False

    @property
    def uses_conftest(self) -> bool:
        return self.conftest or self.database


ERRORS = ("tests/test_status.py", "tests/test_error_contract.py")
CONFIG = ("tests/test_config.py", "tests/test_config_contract.py")

MODULES: tuple[Module, ...] = (
    Module(f"{SRC}/errors.py", ERRORS),
    Module(f"{SRC}/status.py", ERRORS),
    Module(f"{SRC}/config.py", CONFIG),
    Module(f"{SRC}/config_sections.py", CONFIG),
    Module(f"{SRC}/config_checks.py", CONFIG),
    # The tests that ask a real server (left out: the runner leaves out every test asking for
    # tests/conftest.py's server fixtures) agree with the table GOOD, which pins the text;
    # the two hypothesis properties are left out for time (they cost 5 × the tables).
    Module(
        f"{SRC}/db/names.py",
        ("tests/db/test_names.py", "tests/db/test_names_contract.py"),
        args=("-k", "not property"),
    ),
    Module(f"{SRC}/wire.py", ("tests/test_wire.py",)),
    # tests/db/test_decoding.py checks them against a real server; these pin each edge.
    *(
        Module(f"{SRC}/db/decoding/{name}.py", ("tests/db/test_decoding_values.py",))
        for name in ("numbers", "datetimes", "json", "text", "rows", "startup")
    ),
    # Array text is parsed without a server; the server-bound tests are left out.
    Module(
        f"{SRC}/db/decoding/arrays.py",
        ("tests/db/test_decoding.py", "tests/db/test_decoding_values.py"),
        args=("-k", "parse_array or array_decoder or fix_bounds"),
    ),
    # The type tables against the server's own pg_type.
    Module(f"{SRC}/db/decoding/oids.py", ("tests/db/test_oids.py",), database=True),
    # Which decoder each type gets, and the catalog of other types: through a real server.
    *(
        Module(
            f"{SRC}/db/decoding/{name}.py",
            (
                "tests/db/test_decoding.py",
                "tests/db/test_decoding_values.py",
                "tests/db/test_casters.py",
                "tests/db/test_type_catalog.py",
            ),
            database=True,
        )
        for name in ("casters", "catalog")
    ),
    # The policy file read without a gateway (tests/auth/test_auth.py runs it through one).
    *(
        Module(f"{SRC}/auth/{name}.py", ("tests/auth/test_policy_contract.py",))
        for name in ("policy", "keys")
    ),
    # The SQL policy called directly (tests/db/test_sqlpolicy*.py send it through a gateway).
    *(
        Module(f"{SRC}/db/{name}.py", ("tests/db/test_sqlpolicy_contract.py",))
        for name in ("sqlpolicy", "sqlrules")
    ),
)
