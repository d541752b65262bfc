# edgefleet developer tasks (https://github.com/casey/just). Each recipe is plain shell too.

venv := ".venv/bin"

# create the virtual environment with everything for tests and the demo
setup:
    python3 -m venv .venv && {{venv}}/pip install -q -e ".[dev]"

# run the whole fleet on this machine (broker, controller, 3 agents)
demo *ARGS: setup
    {{venv}}/fleet demo {{ARGS}}

# the test suite (skips what needs mosquitto/chromium/postgres when absent)
test *ARGS: setup
    {{venv}}/pytest -q -n 3 --dist loadfile {{ARGS}}

# every benchmark; each prints ratios against a baseline measured in the same run
bench: setup
    for b in bench/*.py; do echo "== $b"; {{venv}}/python "$b"; done

# ruff, import contracts, mypy
lint: setup
    {{venv}}/ruff check src tests bench
    {{venv}}/lint-imports
    {{venv}}/mypy
