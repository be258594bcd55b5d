# Two entry points for a fresh machine (see README.md):
#   make demo   set everything up and run the edge service on its embedded defaults
#   make test   set everything up (Debian's mosquitto included) and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	@command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null && command -v openssl >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssl; }

demo: setup
	$(BIN)/deeplens-edge demo

test: setup system-deps
	$(BIN)/pytest -q

bench: setup system-deps
	$(BIN)/python -m bench.edge_bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
