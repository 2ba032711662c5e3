# spectask's image: the framework, this application (workloads/, spec/) and the code generated
# from the spec, built at image build time so a container never writes generated/ itself.
# One image runs every role; the command picks it (worker by default, see docker-compose.yml).
# Build: docker build -t spectask:local .   (README: Deploy)

# Pinned base (tag, not latest); pin the digest too in your registry's copy if you mirror it.
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first (exact pins of constraints.txt, no dev extra) so code edits reuse the layer.
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY spectask ./spectask
RUN pip install --no-compile -c constraints.txt '.[postgres,demo,dashboard]'

# The application and its generated clients (the same command as `make generate`).
COPY spec ./spec
COPY workloads ./workloads
COPY main-producer.py main-worker.py main-collector.py main-dashboard.py ./
RUN python -m spectask.codegen --spec spec --out generated

FROM python:3.11.11-slim-bookworm

# A fixed, non-root uid/gid so Kubernetes' runAsNonRoot can verify it from the image.
RUN groupadd --system --gid 10001 spectask \
    && useradd --system --uid 10001 --gid spectask --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin spectask

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/spec /app/spec
COPY --from=build /app/workloads /app/workloads
COPY --from=build /app/generated /app/generated
COPY --from=build /app/main-producer.py /app/main-worker.py /app/main-collector.py /app/main-dashboard.py /app/

# Writable paths live outside the image (volumes / emptyDirs), so the root filesystem can be
# read-only: handler output, image inputs, matplotlib's cache and temporary files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPECTASK_APP=workloads.app:app \
    SPECTASK_OUTPUT_DIR=/var/lib/spectask/out \
    SPECTASK_IMAGE_INPUT_ROOT=/var/lib/spectask/in \
    SPECTASK_METRICS_PORT=9100 \
    SPECTASK_METRICS_HOST=0.0.0.0 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN mkdir -p /var/lib/spectask/out /var/lib/spectask/in \
    && chown -R 10001:10001 /var/lib/spectask
WORKDIR /app
USER 10001:10001
EXPOSE 9100

# The worker's /healthz: 200 only while its event loop answers (README: Deploy).
# docker-compose.yml overrides this check for the collector and the dashboard.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['SPECTASK_METRICS_PORT'], timeout=4)"]

# exec: the worker is PID 1 and gets SIGTERM itself (graceful drain, SPECTASK_SHUTDOWN_TIMEOUT);
# the container's hostname names the worker, so `--scale worker=N` gives N distinct ids.
CMD ["sh", "-c", "exec spectask worker \"$HOSTNAME\""]
