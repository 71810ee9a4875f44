# One image recipe for every cryptovol service, built from the repository root:
#   docker build --build-arg SERVICE=featurizer -t cryptovol-featurizer:0.1.0 .
#   docker build --build-arg SERVICE=api --target api -t cryptovol-api:0.1.0 .
#   docker build --build-arg SERVICE=training --build-arg PACKAGE_DIR=training \
#       --build-arg COMMAND=cryptovol-train -t cryptovol-training:0.1.0 .
# SERVICE names the image, PACKAGE_DIR is the Python project it installs (default
# services/SERVICE), COMMAND its console script (default cryptovol-SERVICE), VERSION the
# version in that project's pyproject.toml. Podman and buildah build it unchanged.
# A service that needs more than its package gets a final stage named after it (the API:
# its model artifacts); every other service is the default last stage.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- wheels: the service and every libs/* distribution, with pinned dependencies ---
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
ARG SERVICE
ARG PACKAGE_DIR=services/${SERVICE}
# dumb-init (from PyPI) runs as PID 1: forwards SIGTERM to the service and reaps children
ARG DUMB_INIT_VERSION=1.2.5.post1
WORKDIR /src
COPY constraints.txt ./
COPY libs/ ./libs/
COPY ${PACKAGE_DIR}/ ./package/
# The local distributions are given by path, so a same-named project on the index can
# never stand in for them; the wheelhouse holds everything the install below may use.
# A package that is itself one of libs/ (libs/devtools) is built once, as the package; a
# folder of libs/ without a pyproject.toml (left over in an old clone) is no distribution.
# pip's download cache is a build cache mount: shared by every service's build, never in a layer
RUN --mount=type=cache,target=/root/.cache/pip \
    rm -rf "./${PACKAGE_DIR}" \
    && for lib in ./libs/*/; do [ -f "${lib}pyproject.toml" ] || rm -rf "$lib"; done \
    && pip wheel --no-deps --wheel-dir /service ./package \
    && pip wheel --wheel-dir /wheels --constraint constraints.txt \
        ./libs/*/ /service/*.whl "dumb-init==${DUMB_INIT_VERSION}"

# ---- build: a virtualenv with exactly what the service's pyproject declares -------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
ARG SERVICE
ARG COMMAND=cryptovol-${SERVICE}
ARG DUMB_INIT_VERSION=1.2.5.post1
COPY --from=wheels /service /service
COPY --from=wheels /wheels /wheels
# offline, from the wheelhouse only: the service's dependency closure, never the dev tooling
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels \
        /service/*.whl "dumb-init==${DUMB_INIT_VERSION}" \
    && test -x "/opt/venv/bin/${COMMAND}" \
    && ln -s "${COMMAND}" /opt/venv/bin/cryptovol-service

# ---- runtime: the same slim base, the venv, no build tools, non-root --------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cryptovol-${SERVICE}" \
      org.opencontainers.image.description="cryptovol ${SERVICE}" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --system --gid 10001 cryptovol \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin cryptovol
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT=9100 \
    DATA_DIR=/data \
    MODELS_DIR=/data/models/artifacts \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM
# cryptovol-service links to the service's console script (COMMAND)
ENTRYPOINT ["dumb-init", "--"]
CMD ["cryptovol-service"]

# ---- api: the runtime plus the model artifacts it serves (models/artifacts/<name>/) -
FROM runtime AS api
ENV API_HOST=0.0.0.0 \
    API_PORT=8000 \
    MODELS_DIR=/app/models/artifacts
COPY models/artifacts/ ./models/artifacts/
EXPOSE 8000

# ---- service: every other service (workers expose metrics and probes on 9100) -----
FROM runtime AS service
EXPOSE 9100
