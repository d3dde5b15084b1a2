# The platform's image: the marketlake package with the pinned dependencies of pyproject.toml, Debian's Java 17 for
# Spark, and the Delta and Kafka-connector jars that jvm/pom.xml pins, resolved by Maven at build time so nothing
# downloads at run time. docker-compose runs it as the one-shot `init`, the Dagster code location (where the runs,
# and so Spark, execute), the webserver and the daemon.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Debian's Maven and JDK, as `make jars` uses them. The Spark jars, and s3a's for a lake on S3 (docs/scaling.md); the
# broker runs in its own container.
FROM ${PYTHON_IMAGE} AS jars
RUN apt-get update -q && apt-get install -y -q --no-install-recommends maven openjdk-17-jdk-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY jvm/ jvm/
RUN mvn -q -B -f jvm/pom.xml -pl spark,s3a dependency:copy-dependencies

FROM ${PYTHON_IMAGE}
# openjdk's post-install links man pages into a folder the slim images leave out.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update -q && apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/marketlake
COPY pyproject.toml ./
COPY lakehouse/ lakehouse/
COPY pipelines/ pipelines/
COPY orchestration/ orchestration/
COPY expectations/ expectations/
COPY marketlake/ marketlake/
RUN pip install --no-cache-dir . && pip check
COPY data/sample/ data/sample/
COPY --from=jars /src/.jars/ .jars/
# The state and lake folders docker-compose mounts its volumes on: a new named volume takes their owner.
RUN useradd --system --create-home marketlake \
    && mkdir -p /var/lib/marketlake /lakehouse && chown marketlake:marketlake /var/lib/marketlake /lakehouse
ENV MARKETLAKE_JARS_DIR=/opt/marketlake/.jars \
    MARKETLAKE_ARCHIVE_DIR=/opt/marketlake/data/sample \
    PYTHONUNBUFFERED=1
USER marketlake
CMD ["marketlake", "--help"]
