# syntax=docker/dockerfile:1
# idstore: SCIM 2.0 provisioning server. The default command serves; migrate
# as a separate step, before replacing replicas (docs/operations.md):
#   docker run --rm -e DATABASE_URL=postgresql+asyncpg://... IMAGE idstore migrate
# Python 3.11, the version the tests, mypy and the lock files target.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY idstore ./idstore
COPY scim_server ./scim_server
COPY identity_store ./identity_store
COPY identity_sync ./identity_sync
# The project's wheel (migrations included) and one wheel per dependency, at
# the versions of the runtime lock (`make lock`).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels -c requirements.txt .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    IDSTORE_DEV_TOKEN=false
RUN groupadd --system idstore && useradd --system --gid idstore --home-dir /app idstore
WORKDIR /app
COPY --from=build /wheels /wheels
# Only the wheels built above: nothing is resolved again here.
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels idstore \
 && rm -rf /wheels \
 && chown idstore:idstore /app
USER idstore
EXPOSE 8000
# Ready, not only alive: /readyz answers 200 once the database answers and
# holds this code's migrations (or newer ones), 503 otherwise. No curl in the
# slim image, so Python's urllib; an HTTP error or no answer exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)" 2>/dev/null || exit 1
CMD ["idstore", "serve", "--no-migrate"]
