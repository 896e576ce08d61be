# `make test` and `make demo` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
C_SRC  := $(wildcard nf_modules/mediacore/*.c nf_modules/mediacore/*.h)

.PHONY: test demo bench build clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The C extension is rebuilt in place whenever its sources change.
build: $(STAMP) $(C_SRC)
	$(PY) setup.py -q build_ext --inplace

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
test: build
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

demo: build
	$(PY) run.py

bench: build
	$(PY) -m benchmarks.bench_actors
	$(PY) -m benchmarks.bench_sip_codec

clean:
	rm -rf build $(VENV) *.egg-info nf_modules/mediacore/*.so
