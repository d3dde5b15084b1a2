# The README's two commands: `make demo` and `make test`. Everything else here is what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
JARS_STAMP := .jars/.resolved

.PHONY: setup tools jars demo test lint format down clean

setup: tools $(PY_STAMP) $(JARS_STAMP)

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
	-$(BIN)/marketlake services down

clean: down
	rm -rf var .jars $(VENV)
