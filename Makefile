# Two commands for a fresh machine:  make demo   and   make test
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast bench lint check-specs wheel clean espeak

$(STAMP): pyproject.toml constraints.txt | espeak
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

## espeak-ng speaks the embedded spoken-digits data (spikedsl/runtime/spoken.py,
## examples/audio_to_image): installed with apt-get where there is one (as root),
## otherwise this prints how to install it; never fatal
espeak:
	@if command -v espeak-ng >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q espeak-ng || { apt-get update -q && apt-get install -y -q espeak-ng; } \
	  || echo "espeak-ng: apt-get failed; the spoken-digits data needs it"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "espeak-ng is not installed: run  sudo apt-get install espeak-ng"; \
	else \
	  echo "espeak-ng is not installed: use your package manager (dnf install espeak-ng," \
	       "brew install espeak-ng) or see https://github.com/espeak-ng/espeak-ng"; \
	fi

## the main job: train on scikit-learn digits, export NIR, simulate in Brian2
demo: $(STAMP)
	$(BIN)/python -m spikedsl.runtime.pipeline

## the whole test suite (what CI runs): tests/ and every test block of the
## library (specs/, examples/) on every target, through the pytest plugin
test: $(STAMP)
	$(BIN)/python -m pytest -q tests specs examples

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests specs examples

check-specs: $(STAMP)
	$(BIN)/spikedsl check $$(find specs -name '*.spk' | sort)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_frontend.py

lint: $(STAMP)
	$(BIN)/ruff check spikedsl tests benchmarks examples

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info runs
