#!/usr/bin/env bash
# Set up taskrun's development environment and run the demo, the checks or the benchmarks.
#
#   bash dev.sh demo          # create .venv if needed, install, run the example app
#   bash dev.sh test [ARGS]   # create .venv if needed, install (with the celery extra; and
#                             # chromium and redis-server, as root on Debian), run ruff, mypy
#                             # and the tests
#   bash dev.sh bench [ARGS]  # create .venv if needed, install, run the benchmarks
#   bash dev.sh docs          # create .venv if needed, install (and Debian's doc packages,
#                             # as root), build the docs into docs/_build/html
#
# Needs Python 3.11 or newer (set PYTHON=/path/to/python3.x to choose one)
# and access to PyPI the first time.  ARGS go to pytest or bench/run.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.taskrun-installed"

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup() {
    if [ ! -x "$PY" ]; then
        local base
        base=$(find_python) || die "taskrun needs Python 3.11 or newer, and none was found \
(python3 is $(python3 --version 2>&1 || echo 'missing')); install one, or point PYTHON= at it: \
PYTHON=/usr/bin/python3.12 bash dev.sh ${COMMAND}"
        say "creating $VENV with $base ($("$base" --version 2>&1))"
        "$base" -m venv "$VENV" || die "could not create $VENV; on Debian/Ubuntu install the \
venv module first: sudo apt-get install python3-venv"
    fi
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$VENV has $("$PY" --version 2>&1); taskrun needs 3.11+: remove $VENV and run again"
    # Reinstall only when the dependencies changed since the last install.
    local wanted
    wanted=$(cksum pyproject.toml)
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
        say "installing taskrun and its development tools into $VENV"
        "$PY" -m pip install --disable-pip-version-check --quiet -e '.[dev]'
        printf '%s\n' "$wanted" >"$STAMP"
    fi
}

# Install Debian packages that a step needs, when they are missing: as root with
# apt-get, else stop and print the command.  WHY names the step that needs them.
ensure_debian_packages() {
    local why=$1 missing=() pkg
    shift
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local install="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "$why needs ${missing[*]}, missing; installing: $install"
        local started=$SECONDS
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null; then
            say "installed ${missing[*]} in $((SECONDS - started)) s"
            return 0
        fi
        die "could not install ${missing[*]} with: $install; $why needs them: install them, \
then run again"
    fi
    die "$why needs the Debian packages ${missing[*]}, which are missing; install them \
(sudo $install), then run again"
}

# The browser tests drive Debian's chromium with playwright (playwright's own
# browser download is not used); the Celery engine's tests (tests/test_engines_e2e.py)
# and bench start Debian's redis-server on free ports (the package's own system-wide
# server is not used).
ensure_test_packages() {
    command -v chromium >/dev/null 2>&1 || ensure_debian_packages "the browser tests" chromium
    command -v redis-server >/dev/null 2>&1 ||
        ensure_debian_packages "the Celery engine's tests" redis-server
    ensure_doc_packages
}

# The docs link to Python, Flask, Werkzeug, blinker, gevent and Celery through
# the objects.inv inventories of Debian's documentation packages (the build has
# no network); docs/conf.py reads them from /usr/share/doc.
ensure_doc_packages() {
    ensure_debian_packages "the docs build" python3-doc python-flask-doc python-werkzeug-doc \
        python-blinker-doc python-gevent-doc python-celery-doc
}

# A fresh read every time (-E: autodoc pages depend on the code, which Sphinx does not
# track), and warnings are errors: a broken reference (-n), a missing docstring of a public
# name or a bad page fails the build (docs/_ext/taskrun_docs.py adds the checks).
build_docs() {
    "$VENV/bin/sphinx-build" -E -W -n --keep-going -q -b html docs docs/_build/html "$@"
}

run_tests() {
    local failed=()
    say "ruff check"
    "$VENV/bin/ruff" check . || failed+=("ruff check")
    say "ruff format --check"
    "$VENV/bin/ruff" format --check . || failed+=("ruff format (run: $VENV/bin/ruff format .)")
    say "mypy"
    "$VENV/bin/mypy" || failed+=("mypy")
    say "docs (sphinx-build -W -n into docs/_build/html)"
    build_docs || failed+=("docs build (run: bash dev.sh docs)")
    say "pytest (monkey-patched by scripts/pytest_gevent.py)"
    local code=0
    "$PY" scripts/pytest_gevent.py -q "$@" || code=$?
    if [ "$code" -eq 5 ]; then
        failed+=("pytest collected no tests")
    elif [ "$code" -ne 0 ]; then
        failed+=("pytest (exit code $code)")
    fi
    if [ "${#failed[@]}" -ne 0 ]; then
        printf '\nFAILED:\n' >&2
        printf '  - %s\n' "${failed[@]}" >&2
        exit 1
    fi
    say "all checks passed"
}

COMMAND=${1:-}
case "$COMMAND" in
demo)
    shift
    setup
    say "running the example app (python -m example_app); stop it with Ctrl-C"
    exec "$PY" -m example_app "$@"
    ;;
test)
    shift
    setup
    ensure_test_packages
    run_tests "$@"
    ;;
docs)
    shift
    setup
    ensure_doc_packages
    say "building the docs into docs/_build/html"
    build_docs "$@"
    say "open docs/_build/html/index.html"
    ;;
bench)
    shift
    setup
    command -v redis-server >/dev/null 2>&1 ||
        ensure_debian_packages "the celery bench" redis-server
    exec "$PY" bench/run.py "$@"
    ;;
*)
    printf 'usage: bash dev.sh demo | test [pytest args] | bench [bench args] | docs\n' >&2
    exit 2
    ;;
esac
