# syntax=docker/dockerfile:1
#
# Two stages: `build` turns the project and every dependency into wheels; `runtime` installs
# only those wheels into a clean slim image and runs as an unprivileged user.
#
# Why python:*-slim and not distroless or scratch for the runtime: scratch has no libc, no
# CPython and no CA certificates, so it cannot run a Python service at all; distroless' python
# image follows Debian's python3 (not the 3.11 this image is tested with), and has no pip or
# shell to install our wheels, so we would have to copy a whole site-packages across
# interpreter builds and lose `docker exec` debugging. Slim is Debian with the official
# CPython and nothing else; pip is removed after use below.
#
# The Debian release is part of the tag so that a rebuild does not silently move the base OS.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what building the wheel reads: no tests, no .git, no local virtualenv (.dockerignore).
COPY pyproject.toml README.md ./
COPY src ./src

# A C compiler for the project's one optional extension (src/wikipulse/_utf8.c, the UTF-8
# check of the bulk paths): its wheel is built here with the extension compiled in, and the
# runtime stage below gets only the wheels, no compiler. Without gcc the build would still
# succeed, without the extension (pyproject.toml marks it optional), and run slower.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# --only-binary: every dependency must come as a published wheel, so no dependency is ever
# compiled here, and one that would need it fails the build loudly instead. The project
# itself is still built from ./ (pip always builds a local source tree).
RUN pip wheel --only-binary=:all: --wheel-dir /wheels .


FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.0.0.dev0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wikipulse" \
      org.opencontainers.image.description="Live statistics of Wikimedia's RecentChange stream behind an authenticated HTTP API." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/wikipulse/wikipulse" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WIKIPULSE_HOST=0.0.0.0 \
    WIKIPULSE_PORT=7000 \
    WIKIPULSE_SQLITE_PATH=/data/wikipulse.db

# A fixed uid/gid so that volume ownership and Kubernetes' runAsNonRoot checks are predictable.
RUN groupadd --system --gid 10001 wikipulse \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin wikipulse \
 && install --directory --owner=10001 --group=10001 --mode=0750 /data

# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
# --no-index: nothing is fetched from the network here; only the wheels built above install.
# Byte-code is compiled now, into the image, so every start (and every health check) skips it.
# pip, setuptools and wheel are then removed: the service never needs them at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
 && pip uninstall --yes --quiet pip setuptools wheel

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 7000

# `wikipulse healthcheck` GETs /status with the standard library: the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["wikipulse", "healthcheck"]

ENTRYPOINT ["wikipulse"]
CMD ["serve"]
