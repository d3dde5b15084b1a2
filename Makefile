# The README's two commands: `make demo` and `make test`. Everything else here is what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
JARS_STAMP := .jars/.resolved

.PHONY: setup tools jars demo test test-fast test-cluster lint format down clean

setup: tools $(PY_STAMP) $(JARS_STAMP) superset-venv chromium docker-compose

# The JDK (Spark, Kafka) and Maven (jar resolution) come from the OS; install them when missing and allowed.
tools:
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "need java 17+ and maven on PATH" >&2; exit 1; }; \
	  apt-get update -q && apt-get install -y -q openjdk-17-jdk-headless maven; }

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

$(JARS_STAMP): jvm/pom.xml jvm/spark/pom.xml jvm/kafka/pom.xml jvm/s3a/pom.xml jvm/s3proxy/pom.xml
	rm -rf .jars
	mvn -q -B -f jvm/pom.xml dependency:copy-dependencies
	touch $@

jars: $(JARS_STAMP)

demo: setup
	$(BIN)/marketlake demo

test: setup lint
	$(BIN)/pytest

# The pure layer (no Spark, no service): the maths, parsers, settings, definitions; well under a minute.
test-fast: $(PY_STAMP)
	$(BIN)/pytest -m pure -q

# Only the stream on a loopback cluster (tests/test_cluster.py; `make test` runs it too): S3Proxy, Spark standalone
# with 2 workers, 3 Kafka nodes, one Kafka node and one Spark worker killed mid-replay.
test-cluster: setup
	$(BIN)/pytest -m cluster -q

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(PY_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

down:
	-$(BIN)/marketlake down

clean: down
	rm -rf var .jars $(VENV) $(SUPERSET_VENV)

# --- SQL and dashboards (docs/sql-and-dashboards.md) ---
# Superset lives in a virtualenv of its own: it caps pandas, SQLAlchemy and pyarrow below the platform's pins.
SUPERSET_VENV  := .venv-superset
SUPERSET_STAMP := $(SUPERSET_VENV)/.installed

$(SUPERSET_STAMP): superset/requirements.txt superset/constraints.txt
	$(PYTHON) -m venv $(SUPERSET_VENV)
	$(SUPERSET_VENV)/bin/pip install -q --upgrade pip
	$(SUPERSET_VENV)/bin/pip install -q -r superset/requirements.txt -c superset/constraints.txt
	$(SUPERSET_VENV)/bin/pip check
	touch $@

.PHONY: superset-venv chromium docker-compose superset-up superset-down compose-config
superset-venv: $(SUPERSET_STAMP)

# $(call debian,COMMAND): install Debian's package of that name when the command is missing and allowed.
define debian
@command -v $(1) >/dev/null || { \
  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "need $(1) on PATH" >&2; exit 1; }; \
  apt-get update -q && apt-get install -y -q $(1); }
endef

# Headless browser for the dashboard tests: Debian's chromium (never a downloaded browser build).
chromium:
	$(call debian,chromium)

# tests/test_compose.py validates docker-compose.yml with `docker-compose config` (no Docker engine needed).
docker-compose:
	$(call debian,docker-compose)

superset-up: setup superset-venv
	$(BIN)/marketlake superset up

superset-down:
	-$(BIN)/marketlake superset down

# Validates docker-compose.yml with placeholder secrets (the real ones come from the environment at `up`).
compose-config: docker-compose
	DAGSTER_POSTGRES_PASSWORD=check SUPERSET_POSTGRES_PASSWORD=check SUPERSET_ADMIN_PASSWORD=check \
	  SUPERSET_SECRET_KEY=check-only-not-a-real-secret-0123456789 docker-compose config -q
