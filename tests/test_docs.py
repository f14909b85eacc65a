"""Every Python sample in the docs and the README runs, so the docs cannot rot.

Each ```` ```python ```` block of ``docs/**/*.md`` and ``README.md`` is run in a
subprocess of its own (a fresh interpreter: nothing patched, nothing
imported), with a page's temporary directory as the working directory and a
time limit.  The blocks of one page run in order in the same directory, so a
block preceded by ``<!-- file: NAME -->`` is also written there as ``NAME`` for
the later blocks (and the shell commands the page shows) to import.  Blocks
run with ``__name__ == "__docs__"``, so a complete app file's ``if __name__ ==
"__main__":`` serving block is not entered.

A block whose immediately preceding line is ``<!-- not-run: reason -->`` is
skipped, with the reason; that is for blocks that need a broker, a real
deploy or a server running for ever.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import serving_helpers

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("**/*.md")) + [ROOT / "README.md"]
PAGES = [page for page in PAGES if "_build" not in page.parts]
#: Seconds one block may run.
BLOCK_TIMEOUT = 60
_FENCE = re.compile(r"^(?P<indent> *)```python\s*$")
_NOT_RUN = re.compile(r"^\s*<!-- not-run: (?P<reason>.+?) -->\s*$")
_FILE = re.compile(r"^\s*<!-- file: (?P<name>[\w./-]+) -->\s*$")
#: Runs a block as the samples promise: a fresh module named ``__docs__``.
_RUNNER = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__docs__')"


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the not-run reason, if any
    file: str | None  # the file name to write it to, if any

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """Return the page's Python blocks, in order, with their markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = opening.group("indent")
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{i + 1}: a ```python block is never closed")
        body = "\n".join(
            line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]
        )
        before = lines[i - 1] if i > 0 else ""
        skip = _NOT_RUN.match(before)
        named = _FILE.match(before)
        found.append(
            Block(
                page,
                i + 1,
                textwrap.dedent(body) + "\n",
                skip.group("reason") if skip else None,
                named.group("name") if named else None,
            )
        )
        i = end + 1
    return found


PAGE_BLOCKS = {page: blocks_of(page) for page in PAGES}


def test_the_docs_have_python_samples() -> None:
    """The collection finds the pages and their blocks (a broken pattern finds none)."""
    assert len(PAGES) > 10
    assert sum(len(blocks) for blocks in PAGE_BLOCKS.values()) > 30


def test_not_run_is_rare() -> None:
    """Most samples run: at most a fifth are marked not-run."""
    every = [block for blocks in PAGE_BLOCKS.values() for block in blocks]
    skipped = [block.id for block in every if block.skip]
    assert len(skipped) * 5 <= len(every), skipped


@pytest.mark.parametrize(
    "page", [page for page in PAGES if PAGE_BLOCKS[page]], ids=lambda p: str(p.relative_to(ROOT))
)
def test_page_samples_run(page: Path, tmp_path: Path) -> None:
    """Every block of the page runs to the end, in order, in one directory."""
    for n, block in enumerate(PAGE_BLOCKS[page]):
        if block.skip:
            continue
        script = tmp_path / f"_block_{n}.py"
        script.write_text(block.code, encoding="utf-8")
        if block.file:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, "-c", _RUNNER, str(script)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
                env={
                    "PATH": "/usr/bin:/bin",
                    "HOME": str(tmp_path),
                    "TMPDIR": str(tmp_path),
                    "PYTHONPATH": str(tmp_path),
                },
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.id}: the sample ran longer than {BLOCK_TIMEOUT} s:\n{block.code}")
        assert done.returncode == 0, (
            f"{block.id}: the sample failed (exit {done.returncode}):\n{block.code}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )


def _file_block(page: str, name: str) -> str:
    """Return the block of ``page`` marked ``<!-- file: name -->``."""
    [block] = [b for b in PAGE_BLOCKS[ROOT / page] if b.file == name]
    return block.code


@pytest.mark.slow
def test_the_getting_started_app_runs_under_the_documented_gunicorn_config(
    tmp_path: Path,
) -> None:
    """``shop.py`` of the first page, served by the deployment page's gunicorn.conf.py.

    A background view answers 202, any worker answers its status once it
    succeeded, and SIGTERM stops gunicorn cleanly: what a newcomer does.
    """
    (tmp_path / "shop.py").write_text(_file_block("docs/getting-started.md", "shop.py"))
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(_file_block("docs/deployment.md", "gunicorn.conf.py"))
    store = tmp_path / "var" / "taskrun.db"
    store.parent.mkdir(mode=0o700)
    env = {
        **serving_helpers.app_env(tmp_path),
        "PYTHONPATH": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "FLASK_TASKRUN_STORE": f"sqlite:///{store}",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(conf), "-w", "2", "--bind"]
    command += ["127.0.0.1:0", "--no-control-socket", "shop:create_app()"]
    with serving_helpers.run_process(command, env, tmp_path / "gunicorn.log") as served:
        url = serving_helpers.gunicorn_url(served, 40.0)
        serving_helpers.wait_workers_ready(served, 2, 40.0)
        request = urllib.request.Request(url + "/reports/2026", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
            location = answer.headers["Location"]

        def succeeded() -> dict[str, object] | None:
            status, body, _ = serving_helpers.http_get(url + location)
            document = json.loads(body) if status == 200 else {}
            return document if document.get("state") == "SUCCESS" else None

        document = serving_helpers.wait_for(succeeded, 20.0, "the report job to succeed")
        assert document["result"] == {"year": 2026, "rows": 3}
        assert store.exists()
        served.signal(signal.SIGTERM)
        assert served.wait_exit(40.0) == 0
