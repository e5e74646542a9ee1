# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
AIRFLOW := $(VENV)/bin/airflow
STACK := $(PY) -m airflow_provider_dataworks.local
STATE := $(CURDIR)/.dataworks-local
DEMO_HOME := $(CURDIR)/.airflow/demo
PYTEST_ARGS ?=

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False

.PHONY: install kafka browser demo test unit lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint requirements/constraints.txt --editable ".[test,bench]"
	touch $@

kafka: install
	$(STACK) fetch

demo: install kafka
	@set -e; \
	export DATAWORKS_LOCAL_HOME="$(STATE)" AIRFLOW_HOME="$(DEMO_HOME)" \
	       AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/example_dags"; \
	trap '$(STACK) down' EXIT; \
	$(STACK) up --ports auto; \
	. "$(STATE)/airflow.env"; \
	$(AIRFLOW) db migrate > "$(STATE)/airflow-db-migrate.log" 2>&1; \
	$(STACK) --quiet play demo --delay 20 > /dev/null; \
	echo "== airflow dags test example_dataworks_wait_for_instance (the emulator publishes in ~20 s)"; \
	$(AIRFLOW) dags test example_dataworks_wait_for_instance 2>&1 | tee "$(STATE)/demo-dags-test.log" \
	    | grep -E "Deferring until|Waiting for DataWorks|Matched DataWorks|DataWorks event received|DagRun Finished" \
	    | sed -E 's/^[0-9TZ:.-]+ //; s/ \[airflow[^]]*\].*$$//; s/ (correlation_id|loc)=.*$$//' || true; \
	grep -q "DataWorks event received" "$(STATE)/demo-dags-test.log" || { echo "demo failed: see $(STATE)/demo-dags-test.log"; exit 1; }; \
	echo "== the sensor received:"; grep -o "DataWorks event received: .*" "$(STATE)/demo-dags-test.log" | head -n 1

test: install kafka browser lint
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check airflow_provider_dataworks tests example_dags benchmarks
	$(VENV)/bin/ruff format --check airflow_provider_dataworks tests example_dags benchmarks
	$(VENV)/bin/mypy airflow_provider_dataworks

# Our trigger against the Kafka provider's AwaitMessageTrigger; writes benchmarks/results/.
bench: install kafka
	$(PY) -m benchmarks.run $(BENCH_ARGS)

# Debian's Chromium for the connection-form browser test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean:
	-$(STACK) down
	rm -rf $(VENV) .airflow .dataworks-local .pytest_cache
