# Two entry points for a fresh machine (see README.md):
#   make demo   set everything up and run the edge service on its embedded defaults
#   make test   set everything up (Debian's mosquitto, iproute2, python3-venv, chromium and prometheus's promtool included) and run the test suite
#   make demo-model  retrain the demo's model (edge/demo_model/) on synthetic frames, about two minutes
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps demo demo-model test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	@command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null && command -v openssl >/dev/null && \
	  command -v ip >/dev/null && command -v promtool >/dev/null && test -x /usr/bin/chromium && \
	  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    mosquitto mosquitto-clients openssl iproute2 python3-venv chromium prometheus; }

demo: setup
	$(BIN)/deeplens-edge demo

# The demo's model: frames of synthetic cameras 1-300 to train on and 1001-1030 to pick the epoch
# and report on (the demo itself shows camera 0), labelled by the camera, in its class order.
DEMO_BUILD = build/demo-model
demo-model: setup
	rm -rf $(DEMO_BUILD)
	$(BIN)/python -m edge.demo frames --seeds 1-300 -n 4 --size 160 -o $(DEMO_BUILD)/train
	$(BIN)/python -m edge.demo frames --seeds 1001-1030 -n 5 --size 160 -o $(DEMO_BUILD)/val
	$(BIN)/deeplens-ctl labels import -f images $(DEMO_BUILD)/train --class-map note_2000,note_1000 -o $(DEMO_BUILD)/train.manifest
	$(BIN)/deeplens-ctl labels import -f images $(DEMO_BUILD)/val --class-map note_2000,note_1000 -o $(DEMO_BUILD)/val.manifest
	$(BIN)/python -m control.train.demo $(DEMO_BUILD)/train.manifest $(DEMO_BUILD)/val.manifest --seed 0 \
	  -o edge/demo_model --run $(DEMO_BUILD)/run

test: setup system-deps
	$(BIN)/pytest -q

bench: setup system-deps
	$(BIN)/python -m bench.edge_bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
