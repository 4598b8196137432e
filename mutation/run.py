"""Mutation testing of the modules where the contract lives: `make mutate [MODULE=path]`.

mutmut 2.5 (pinned in requirements/constraints.txt) makes the mutants: its operators,
applied one at a time (``mutmut.list_mutations`` / ``mutmut.mutate``). This script runs
them, because mutmut's own runner counts a mutant as killed only when the test command
exits 1 (an import error, exit 2, would count as a survivor) and pays for a new Python and
pytest start-up per mutant, which on a shared 2-core machine costs more than the tests.

For each module: its focused tests (mutation/modules.py) run once unmutated, then once per
mutant in a child forked from this process, which has already imported pytest and the
third-party libraries but not the gateway or the tests, so the child imports the mutated
module from its source. The mutant is written to the module's file and the original put
back afterwards (also on Ctrl-C). Any failure of the tests is a kill: a failed assertion,
an error importing the mutated module, a test that no longer collects; a mutant that makes
them run 10 × longer than the unmutated run (plus 10 s) is stopped and counted as killed
(a timeout). One worker: mutants run one after another.

The figures go into docs/testing.md between its markers. A survivor is listed there with
the reason it is equivalent when ``mutation/equivalent.py`` names it, and as a missing test
otherwise: the page says what the run found, nothing else.

mutmut 3 was not used: it mutates only inside functions (trampolines), so the tables
that carry the contract (SQLSTATE → kind, the type numbers) would never be mutated.
"""

from __future__ import annotations

import os

# As tests/conftest.py: gRPC's fork handlers off before gRPC loads, for the forked children.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import argparse
import atexit
import contextlib
import difflib
import importlib
import io
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mutmut import ALL, Context, list_mutations, mutate

from mutation.equivalent import EQUIVALENT
from mutation.modules import MODULES, Module

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- mutation:begin -->", "<!-- mutation:end -->"
OURS = ("datamorph_gateway", "tests")

# The plugins the focused tests never need, off.
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:anyio"]


@dataclass(frozen=True)
class Survivor:
    module: str
    line_number: int
    before: str
    after: str


@dataclass(frozen=True)
class Result:
    module: str
    mutants: int
    killed: int
    timeouts: int
    survivors: tuple[Survivor, ...]
    seconds: float

    @property
    def score(self) -> float:
        """Killed (timeouts included: a mutant that hangs the tests is caught) over all."""
        return 100.0 * (self.killed + self.timeouts) / self.mutants if self.mutants else 100.0


# A temporary directory of this run's own: pytest prunes its shared /tmp/pytest-of-<user>
# as runs start, which a run per mutant would do to every other pytest on the machine.
BASETEMP = Path(tempfile.mkdtemp(prefix="datamorph-mutation-")) / "pytest"
atexit.register(shutil.rmtree, BASETEMP.parent, ignore_errors=True)  # children _exit: not theirs


def pytest_args(module: Module) -> list[str]:
    conftest = [] if module.conftest or module.database else ["--noconftest"]
    return [*PYTEST, f"--basetemp={BASETEMP}", *conftest, *module.args, *module.tests]


def preload(module: Module) -> None:
    """Import what the tests import, then forget the gateway's and the tests' own modules:
    the children inherit the libraries and import the (mutated) gateway afresh."""
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main([*pytest_args(module), "--collect-only", "-q"])
    for name in list(sys.modules):
        if name.split(".")[0] in OURS:
            del sys.modules[name]
    importlib.invalidate_caches()


def run_tests(module: Module, timeout_s: float | None) -> str:
    """Run the focused tests in a forked child: "passed", "failed" or "timeout"."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            sys.dont_write_bytecode = True  # no .pyc of a mutant, ever
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = 0 if pytest.main(pytest_args(module)) == 0 else 1
        finally:
            os._exit(code)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.02)


@contextlib.contextmanager
def restored(path: Path) -> Iterator[str]:
    """The module's source; whatever happens, the file holds it again afterwards."""
    original = path.read_text()
    try:
        yield original
    finally:
        path.write_text(original)


def changed_lines(original: str, mutated: str) -> tuple[int, str, str]:
    """The first changed line's number, and the changed lines before and after."""
    a, b = original.splitlines(), mutated.splitlines()
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
    first = ops[0][1] + 1 if ops else 0
    before = " / ".join(a[i].strip() for _, i1, i2, _, _ in ops for i in range(i1, i2))
    after = " / ".join(b[j].strip() for _, _, _, j1, j2 in ops for j in range(j1, j2))
    return first, before, after


def run_module(module: Module) -> Result:
    path = ROOT / module.path
    started = time.monotonic()
    preload(module)
    with restored(path) as original:
        ids = list_mutations(Context(source=original, mutation_id=ALL, filename=module.path))
        baseline_started = time.monotonic()
        if run_tests(module, None) != "passed":
            raise SystemExit(f"{module.path}: the focused tests fail without a mutant")
        timeout_s = 10 * (time.monotonic() - baseline_started) + 10
        print(f"   {len(ids)} mutants, tests take {timeout_s / 10 - 1:.1f} s", flush=True)
        killed = timeouts = 0
        survivors = []
        for n, mutation_id in enumerate(ids, 1):
            context = Context(source=original, mutation_id=mutation_id, filename=module.path)
            mutated, _ = mutate(context)
            path.write_text(mutated)
            outcome = run_tests(module, timeout_s)
            if outcome == "failed":
                killed += 1
            elif outcome == "timeout":
                timeouts += 1
            else:
                survivors.append(Survivor(module.path, *changed_lines(original, mutated)))
            if n % 25 == 0:
                print(f"   {n}/{len(ids)}, {len(survivors)} survived", flush=True)
    return Result(
        module.path, len(ids), killed, timeouts, tuple(survivors), time.monotonic() - started
    )


def why_equivalent(s: Survivor) -> str | None:
    exact = EQUIVALENT.get((s.module, s.line_number, s.before, s.after))
    return exact or EQUIVALENT.get((s.module, s.before, s.after))


def table(results: list[Result]) -> str:
    lines = [
        "| module | mutants | killed | survived | score | focused tests | minutes |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    by_path = {m.path: m for m in MODULES}
    for r in results:
        tests = " ".join(f"`{t}`" for t in by_path[r.module].tests)
        lines.append(
            f"| `{r.module.removeprefix('server/src/datamorph_gateway/')}` | {r.mutants} "
            f"| {r.killed + r.timeouts} | {len(r.survivors)} | {r.score:.1f}% | {tests} "
            f"| {r.seconds / 60:.1f} |"
        )
    lines += ["", "Surviving mutants:", ""]
    survivors = [s for r in results for s in r.survivors]
    if not survivors:
        lines.append("none.")
    for s in survivors:
        name = s.module.removeprefix("server/src/datamorph_gateway/")
        why = why_equivalent(s)
        verdict = f"equivalent: {why}" if why else "**not judged equivalent: a missing test**"
        lines.append(f"- `{name}:{s.line_number}` `{s.before}` → `{s.after}` — {verdict}")
    return "\n".join(lines)


def merge(previous: str, results: list[Result]) -> list[Result]:
    """Results of this run, plus the rows of earlier runs for modules not run now."""
    done = {r.module for r in results}
    kept: list[Result] = []
    for module in MODULES:
        if module.path in done:
            kept.extend(r for r in results if r.module == module.path)
            continue
        row = re.search(
            rf"^\| `{re.escape(module.path.removeprefix('server/src/datamorph_gateway/'))}` "
            r"\| (\d+) \| (\d+) \| (\d+) \| [\d.]+% \| [^|]* \| ([\d.]+) \|$",
            previous,
            re.MULTILINE,
        )
        if row is None:
            continue
        mutants, killed, survived, minutes = row.groups()
        old = [
            Survivor(module.path, int(m.group(1)), m.group(2), m.group(3))
            for m in re.finditer(
                rf"^- `{re.escape(module.path.removeprefix('server/src/datamorph_gateway/'))}"
                r":(\d+)` `(.*)` → `(.*)` — ",
                previous,
                re.MULTILINE,
            )
        ]
        kept.append(
            Result(module.path, int(mutants), int(killed), 0, tuple(old), float(minutes) * 60)
        )
        assert len(old) == int(survived), module.path
    return kept


def write_report(results: list[Result]) -> None:
    text = REPORT.read_text()
    head, rest = text.split(BEGIN, 1)
    previous, tail = rest.split(END, 1)
    merged = merge(previous, results)
    REPORT.write_text(f"{head}{BEGIN}\n{table(merged)}\n{END}{tail}")


@contextlib.contextmanager
def database_for(modules: list[Module]) -> Iterator[None]:
    """DATABASE_URL for the children: the caller's, or one embedded PostgreSQL for the run."""
    if os.environ.get("DATABASE_URL") or not any(m.database for m in modules):
        yield
        return
    from datamorph_gateway.pg.server import EmbeddedPostgres

    with EmbeddedPostgres(BASETEMP.parent / "pg" / "data") as pg:
        os.environ["DATABASE_URL"] = pg.dsn
        try:
            yield
        finally:
            del os.environ["DATABASE_URL"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", help="one module's path (default: every module)")
    parser.add_argument("--list", action="store_true", help="print the modules' paths")
    parser.add_argument(
        "--report", action="store_true", help="rewrite docs/testing.md's verdicts, run nothing"
    )
    args = parser.parse_args()
    if args.list:
        print("\n".join(m.path for m in MODULES))
        return 0
    if args.report:
        write_report([])
        return 0
    chosen = [m for m in MODULES if args.module in (None, m.path)]
    if not chosen:
        known = "\n  ".join(m.path for m in MODULES)
        print(f"no module {args.module!r}; mutation/modules.py names:\n  {known}")
        return 2
    results = []
    with database_for(chosen):
        for module in chosen:
            print(f"== {module.path}: {' '.join(module.tests)}", flush=True)
            results.append(run_module(module))
            r = results[-1]
            print(f"== {module.path}: {r.mutants} mutants, score {r.score:.1f}%", flush=True)
            write_report(results)  # after each module: an interrupted run keeps what it found
    below = [r for r in results if r.score < 85.0]
    for r in below:
        print(f"below 85%: {r.module} {r.score:.1f}%")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
