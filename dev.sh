#!/usr/bin/env bash
# Set up taskrun's development environment and run the demo, the checks or the benchmarks.
#
#   bash dev.sh demo          # create .venv if needed, install, run the example app
#   bash dev.sh test [ARGS]   # create .venv if needed, install (with the celery extra; and
#                             # chromium and redis-server, as root on Debian), run ruff, mypy
#                             # and the tests
#   bash dev.sh bench [ARGS]  # create .venv if needed, install, run the benchmarks
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

# The browser test (tests/test_example_page.py) drives Debian's chromium with
# playwright; playwright's own browser download is not used.
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    local install="apt-get update && apt-get install -y chromium"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "chromium is missing; the browser test needs it: $install"
        local started=$SECONDS
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium &&
            command -v chromium >/dev/null 2>&1; then
            say "installed $(chromium --version 2>/dev/null) in $((SECONDS - started)) s"
            return 0
        fi
        die "could not install chromium with: $install; the browser test \
(tests/test_example_page.py) needs it: install it, then run again"
    fi
    die "the browser test (tests/test_example_page.py) needs Chromium, which is missing; \
install it (Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y chromium), then run again"
}

# The Celery engine's tests (tests/test_engines_e2e.py) start Debian's redis-server.
ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    local install="apt-get update && apt-get install -y redis-server"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "redis-server is missing; the Celery engine's tests need it: $install"
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server &&
            command -v redis-server >/dev/null 2>&1; then
            # The package starts a system-wide server; the tests run their own on free ports.
            say "installed $(redis-server --version 2>/dev/null)"
            return 0
        fi
        die "could not install redis-server with: $install; the Celery engine's tests \
(tests/test_engines_e2e.py) need it: install it, then run again"
    fi
    die "the Celery engine's tests (tests/test_engines_e2e.py) need redis-server, which is \
missing; install it (Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y redis-server), \
then run again"
}

run_tests() {
    local failed=()
    say "ruff check"
    "$VENV/bin/ruff" check . || failed+=("ruff check")
    say "ruff format --check"
    "$VENV/bin/ruff" format --check . || failed+=("ruff format (run: $VENV/bin/ruff format .)")
    say "mypy"
    "$VENV/bin/mypy" || failed+=("mypy")
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
    ensure_chromium
    ensure_redis
    run_tests "$@"
    ;;
bench)
    shift
    setup
    ensure_redis  # the celery bench runs redis-server
    exec "$PY" bench/run.py "$@"
    ;;
*)
    printf 'usage: bash dev.sh demo | test [pytest args] | bench [bench args]\n' >&2
    exit 2
    ;;
esac
