"""Mutation testing of the modules where the contract lives: `make mutate [MODULE=path]`.

mutmut 2.5 (pinned in requirements/constraints.txt) makes the mutants: its operators,
applied one at a time (``mutmut.list_mutations`` / ``mutmut.mutate``). This script runs
them, because mutmut's own runner counts a mutant as killed only when the test command
exits 1 (an import error, exit 2, would count as a survivor) and pays for a new Python and
pytest start-up per mutant, which on a shared 2-core machine costs more than the tests.

For each module: its focused tests (mutation/modules.py) run once unmutated, once with the
module replaced by a ``raise`` (the tests must fail: proof that the mutants reach them), then
once per mutant in a child forked from this process, which has already imported pytest and
the third-party libraries but not the gateway or the tests. The child imports the module
from the mutant's source through an import hook (mutation/mutant.py), also in any Python a
test starts; the checkout is never written, so ``--jobs`` children run side by side (the
default: the CPUs, at most 2). Any failure of the tests is a kill: a failed assertion, an
error importing the mutated module, a test that no longer collects; a mutant that makes
them run 10 × longer than the unmutated run (plus 10 s) is stopped and counted as killed
(a timeout).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mutmut import ALL, Context, list_mutations, mutate

from mutation import mutant
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
BASETEMP.mkdir()  # each child's is a directory in it, which pytest makes without parents
SITE = mutant.site_dir(BASETEMP.parent / "site")


def pytest_args(module: Module, basetemp: Path = BASETEMP) -> list[str]:
    conftest = [] if module.uses_conftest else ["--noconftest"]
    return [*PYTEST, f"--basetemp={basetemp}", *conftest, *module.args, *module.tests]


# The fixtures tests/conftest.py defines (a PostgreSQL server and its databases): without
# that conftest a test asking for one cannot run (tests/test_mutation_runner.py keeps this
# list equal to the conftest's).
SERVER_FIXTURES = frozenset({"server_url", "database_url", "database_admin_url"})


class LeaveServerTestsOut:
    """A pytest plugin for the modules whose focused tests run without tests/conftest.py:
    a test file may hold a few tests that ask a real server; they are deselected here, by the
    fixtures they ask for, rather than by name in mutation/modules.py (a new one there would
    otherwise fail the unmutated run: "fixture 'database_url' not found")."""

    @staticmethod
    def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
        kept: list[pytest.Item] = []
        left: list[pytest.Item] = []
        for item in items:
            asked = set(getattr(item, "fixturenames", ()))
            (left if asked & SERVER_FIXTURES else kept).append(item)
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = kept


def run_pytest(module: Module, args: list[str]) -> int:
    plugins = [] if module.uses_conftest else [LeaveServerTestsOut()]
    return int(pytest.main(args, plugins=plugins))


def preload(module: Module) -> None:
    """Import what the tests import, then forget the gateway's and the tests' own modules:
    the children inherit the libraries and import the (mutated) gateway afresh."""
    with contextlib.redirect_stdout(io.StringIO()):
        run_pytest(module, [*pytest_args(module), "--collect-only", "-q"])
    for name in list(sys.modules):
        if name.split(".")[0] in OURS:
            del sys.modules[name]
    importlib.invalidate_caches()


@dataclass
class Child:
    """One forked test run: which mutant (None: the unmutated module), its deadline, its slot."""

    mutation_id: object
    mutated: str | None
    deadline: float | None
    slot: int


def start_child(module: Module, mutated: str | None, slot: int) -> int:
    """Fork a child that runs the focused tests, the module's import serving ``mutated``.

    The mutant's source goes to a file of this run's own (never the checkout), and each slot
    has a pytest basetemp of its own, so children run side by side.
    """
    source_path = BASETEMP.parent / f"mutant-{slot}.py"
    if mutated is not None:
        source_path.write_text(mutated)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child
        sys.dont_write_bytecode = True  # no .pyc of anything imported here, ever
        if mutated is not None:
            name = mutant.module_name(module.path)
            os.environ.update(mutant.environment(name, str(source_path), SITE))
            mutant.install(name, str(source_path))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = 0 if run_pytest(module, pytest_args(module, BASETEMP / f"slot{slot}")) == 0 else 1
    finally:
        os._exit(code)


def run_alone(module: Module, mutated: str | None, timeout_s: float | None) -> str:
    """One child at a time: "passed", "failed" or "timeout"."""
    outcomes = run_children(module, [(None, mutated)], 1, timeout_s)
    return outcomes[0][1]


def run_children(
    module: Module,
    mutants: list[tuple[object, str | None]],
    jobs: int,
    timeout_s: float | None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[object, str]]:
    """Run each mutant's tests, up to ``jobs`` children at once; (id, outcome) in end order."""
    pending = list(reversed(mutants))
    running: dict[int, Child] = {}
    free = list(range(jobs))
    outcomes: list[tuple[object, str]] = []
    try:
        while pending or running:
            while pending and free:
                mutation_id, mutated = pending.pop()
                slot = free.pop()
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                pid = start_child(module, mutated, slot)
                running[pid] = Child(mutation_id, mutated, deadline, slot)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid in running:
                child = running.pop(pid)
                passed = os.waitstatus_to_exitcode(status) == 0
                outcomes.append((child.mutation_id, "passed" if passed else "failed"))
                free.append(child.slot)
                if progress:
                    progress(len(outcomes))
                continue
            now = time.monotonic()
            for pid, child in list(running.items()):
                if child.deadline is not None and now > child.deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    del running[pid]
                    outcomes.append((child.mutation_id, "timeout"))
                    free.append(child.slot)
            time.sleep(0.01)
    finally:  # Ctrl-C: no child left running
        for pid in running:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return outcomes


def changed_lines(original: str, mutated: str) -> tuple[int, str, str]:
    """The first changed line's number, and the changed lines before and after."""
    a, b = original.splitlines(), mutated.splitlines()
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
    first = ops[0][1] + 1 if ops else 0
    before = " / ".join(a[i].strip() for _, i1, i2, _, _ in ops for i in range(i1, i2))
    after = " / ".join(b[j].strip() for _, _, _, j1, j2 in ops for j in range(j1, j2))
    return first, before, after


# A module whose import fails outright: the tests must notice, or the mutants never reach them.
BROKEN = 'raise RuntimeError("mutation/run.py: is the mutant imported?")\n'


def run_module(module: Module, jobs: int) -> Result:
    path = ROOT / module.path
    started = time.monotonic()
    preload(module)
    original = path.read_text()
    ids = list_mutations(Context(source=original, mutation_id=ALL, filename=module.path))
    baseline_started = time.monotonic()
    if run_alone(module, None, None) != "passed":
        # Again, here and with its output shown: this process is about to exit.
        sys.dont_write_bytecode = True
        run_pytest(module, pytest_args(module))
        raise SystemExit(f"{module.path}: the focused tests fail without a mutant (above)")
    timeout_s = 10 * (time.monotonic() - baseline_started) + 10
    if run_alone(module, BROKEN, timeout_s) != "failed":
        raise SystemExit(f"{module.path}: the focused tests pass with the module unimportable")
    took = timeout_s / 10 - 1
    print(f"   {len(ids)} mutants, tests take {took:.1f} s, {jobs} at once", flush=True)
    mutants: list[tuple[object, str | None]] = []
    for n, mutation_id in enumerate(ids):
        mutated, _ = mutate(Context(source=original, mutation_id=mutation_id, filename=module.path))
        mutants.append((n, mutated))
    by_id = dict(mutants)

    def progress(done: int) -> None:
        if done % 25 == 0:
            print(f"   {done}/{len(ids)}", flush=True)

    outcomes = dict(run_children(module, mutants, jobs, timeout_s, progress))
    killed = sum(1 for o in outcomes.values() if o == "failed")
    timeouts = sum(1 for o in outcomes.values() if o == "timeout")
    survivors = [
        Survivor(module.path, *changed_lines(original, by_id[i] or ""))
        for i, _ in mutants
        if outcomes[i] == "passed"
    ]
    if path.read_text() != original:
        raise SystemExit(f"{module.path} changed during the run: its figures would be wrong")
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


def pick(commit: str) -> str:
    """One module for a CI run, chosen by the commit: every module in turn over commits."""
    return MODULES[int(commit[:12], 16) % len(MODULES)].path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", help="one module's path (default: every module)")
    parser.add_argument("--list", action="store_true", help="print the modules' paths")
    parser.add_argument("--pick", metavar="COMMIT", help="print the path CI runs for COMMIT")
    parser.add_argument(
        "--jobs", type=int, default=min(os.cpu_count() or 1, 2), help="mutants at once"
    )
    parser.add_argument(
        "--report", action="store_true", help="rewrite docs/testing.md's verdicts, run nothing"
    )
    args = parser.parse_args()
    if args.list:
        print("\n".join(m.path for m in MODULES))
        return 0
    if args.pick:
        print(pick(args.pick))
        return 0
    if args.report:
        write_report([])
        return 0
    if args.jobs < 1:
        parser.error("--jobs: at least 1")
    chosen = [m for m in MODULES if args.module in (None, m.path)]
    if not chosen:
        known = "\n  ".join(m.path for m in MODULES)
        print(f"no module {args.module!r}; mutation/modules.py names:\n  {known}")
        return 2
    results = []
    with database_for(chosen):
        for module in chosen:
            print(f"== {module.path}: {' '.join(module.tests)}", flush=True)
            results.append(run_module(module, args.jobs))
            r = results[-1]
            print(f"== {module.path}: {r.mutants} mutants, score {r.score:.1f}%", flush=True)
            write_report(results)  # after each module: an interrupted run keeps what it found
    below = [r for r in results if r.score < 85.0]
    for r in below:
        print(f"below 85%: {r.module} {r.score:.1f}%")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
