# syntax=docker/dockerfile:1
#
# payorch image: a builder stage that compiles wheels into a virtualenv, and a runtime stage that
# holds only that virtualenv, the Alembic migrations and a non-root user (no compiler, no pip cache).
# The base is pinned to a patch release; bump it (and the digest, if you pin one) deliberately.

FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools are here only for dependencies that ship no wheel for this platform; this stage is
# thrown away, so the compiler never reaches the runtime image. Version pinned for bookworm.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /build
# README.md is part of the package metadata (pyproject `readme`), so hatchling needs it to build.
# constraints.txt pins the dependency versions, the same file `make` installs with.
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install --no-cache-dir --constraint constraints.txt .


FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="payorch" \
      org.opencontainers.image.description="Payment orchestration service" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAYORCH_PORT=8000 \
    PAYORCH_LOG_JSON=true

# A fixed numeric uid/gid so orchestrators can check runAsNonRoot and volumes can be chowned.
RUN groupadd --system --gid 10001 payorch \
    && useradd --system --uid 10001 --gid payorch --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin payorch

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# `payorch migrate` reads alembic.ini and migrations/ from the working directory. They stay owned by
# root: the service user can read the code it runs but not change it.
COPY alembic.ini ./
COPY migrations ./migrations
# The embedded mode (no configuration) keeps its Postgres data under ./.payorch: the one writable path.
RUN install -d -o payorch -g payorch -m 0700 /app/.payorch

USER 10001:10001
# 8000: the API. 9464: the operations listener (/metrics, /healthz, /readyz) of api and worker,
# opened when PAYORCH_METRICS__PORT is set or in production; never published.
EXPOSE 8000 9464

# slim has no curl: probe liveness with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PAYORCH_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3).status == 200 else 1)"]

CMD ["payorch", "serve", "--host", "0.0.0.0"]
