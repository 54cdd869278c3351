# syntax=docker/dockerfile:1
# idstore: SCIM 2.0 provisioning server. Default command serves; run
# migrations as a separate step:  docker run IMAGE idstore migrate
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY idstore ./idstore
COPY scim_server ./scim_server
COPY identity_store ./identity_store
COPY identity_sync ./identity_sync
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    IDSTORE_DEV_TOKEN=false
RUN groupadd --system idstore && useradd --system --gid idstore --home-dir /app idstore
WORKDIR /app
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Alembic reads alembic.ini from the working directory.
COPY alembic.ini ./
COPY migrations ./migrations
RUN chown -R idstore:idstore /app
USER idstore
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/healthz', timeout=2)"
CMD ["idstore", "serve", "--no-migrate"]
