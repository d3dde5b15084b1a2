# The README's two commands: `make demo` and `make test`. Everything else here is what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
JARS_STAMP := .jars/.resolved

.PHONY: setup tools jars demo test lint format down clean

setup: tools $(PY_STAMP) $(JARS_STAMP) superset-venv chromium

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

$(JARS_STAMP): jvm/pom.xml jvm/spark/pom.xml jvm/kafka/pom.xml
	rm -rf .jars
	mvn -q -B -f jvm/pom.xml dependency:copy-dependencies
	touch $@

jars: $(JARS_STAMP)

demo: setup
	$(BIN)/marketlake demo

test: setup lint
	$(BIN)/pytest

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(PY_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

down:
	-$(BIN)/marketlake superset down
	-$(BIN)/marketlake sql-server down
	-$(BIN)/marketlake services down

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

.PHONY: superset-venv chromium superset-up superset-down compose-config
superset-venv: $(SUPERSET_STAMP)

# Headless browser for the dashboard tests: Debian's chromium (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "need chromium on PATH" >&2; exit 1; }; \
	  apt-get update -q && apt-get install -y -q chromium; }

superset-up: setup superset-venv
	$(BIN)/marketlake superset up

superset-down:
	-$(BIN)/marketlake superset down

# Validates docker-compose.yml (Debian's docker-compose; no Docker engine is needed for `config`).
compose-config:
	@command -v docker-compose >/dev/null || apt-get install -y -q docker-compose
	SUPERSET_SECRET_KEY=check-only-not-a-real-secret-0123456789 SUPERSET_ADMIN_PASSWORD=check docker-compose config -q
