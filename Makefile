# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs certify, runs `certify check` on a shipped example
#   make test   creates .venv if needed, installs the test tools, runs the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: demo test clean bench-deps bench proofs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/certify check specs/digits_prune.yaml --no-cache

# Two processes (the CI machine has 2 cores); a test file runs whole in one of them, so its module
# fixtures run once. `make test JOBS=1` runs serially. The 15 slowest tests are listed at the end.
test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=15

# Regenerate every shipped certificate in proofs/ (after a change to the certificate format, the
# checker or a spec). Each spec writes proofs/<spec>[.<level>].cert.json.
proofs: $(STAMP)
	rm -f proofs/*.cert.json proofs/*.g.npz proofs/*.npz
	for s in specs/*.yaml; do $(VENV)/bin/certify check $$s --no-cache > /dev/null; \
	  rc=$$?; if [ $$rc -gt 1 ]; then echo "$$s: exit $$rc"; exit 1; fi; done
	$(VENV)/bin/certify verify specs/digits_prune.yaml proofs/digits_prune.cert.json

clean:
	rm -rf $(VENV) build *.egg-info

# Optional: auto_LiRPA (the reference bound engine) for benchmarks and cross-checks. Its wheel is
# built from upstream and lives in ../shared/wheels; torch 2.13.0 is the CPU build.
bench-deps: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0 packaging appdirs pyyaml tqdm graphviz
	$(PY) -m pip install -q --no-deps ../shared/wheels/auto_lirpa-0.7.1-py3-none-any.whl

bench: bench-deps
	$(PY) benchmarks/tightness.py --quick --json benchmarks/tightness.json
