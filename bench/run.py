"""Run taskrun's benchmarks in one process: ``python bench/run.py [SECTION ...] [--repeats N]``.

Each section is a module ``bench/bench_<section>.py`` with a
``main(repeats: int)`` function that measures, prints a Markdown table and
returns its rows.  ``core`` runs first, then the others in name order; name
sections on the command line to run only those.  gevent patches the
standard library before anything else is imported, as an app's entry point
would.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - imported after patching on purpose
import importlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST = ["core"]


def sections() -> list[str]:
    """Return the available section names, ``core`` first."""
    found = sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))
    return [name for name in FIRST if name in found] + [n for n in found if n not in FIRST]


def main(argv: list[str]) -> int:
    """Run the chosen sections (default: all) and return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "section", nargs="*", help=f"sections to run (default: all of {sections()})"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median kept)")
    args = parser.parse_args(argv)
    chosen = args.section or sections()
    unknown = sorted(set(chosen) - set(sections()))
    if unknown:
        parser.error(f"unknown section(s) {unknown!r}; available: {sections()!r}")
    sys.path.insert(0, str(HERE))
    print(  # noqa: T201
        f"taskrun benchmarks: python {platform.python_version()}, "
        f"{platform.machine()}, repeats={args.repeats}, sections={chosen}"
    )
    for name in chosen:
        module = importlib.import_module(f"bench_{name}")
        print(f"\n## {name}\n")  # noqa: T201
        started = time.perf_counter()
        module.main(args.repeats)
        print(f"\n({name}: {time.perf_counter() - started:.1f} s)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
