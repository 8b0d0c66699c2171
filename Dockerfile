# Attest's image: the web UI (`attest serve`, gunicorn) by default; the same image runs the scheduler
# (`attest scheduler`) and the migrations (`attest db upgrade`). See compose.yaml and docs/operations.md.
#
#   docker build -t attest .
#
# Two stages: the first builds a virtualenv from requirements/base.lock (every package pinned, the file
# `make lock` writes; no demo or test packages) plus Attest itself with --no-deps, so nothing unpinned
# gets in; the second copies that virtualenv onto a slim Python with WeasyPrint's system libraries.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/attest
WORKDIR /src
COPY requirements/base.lock requirements/base.lock
RUN /opt/attest/bin/pip install -r requirements/base.lock
COPY pyproject.toml README.md ./
COPY attest ./attest
RUN /opt/attest/bin/pip install --no-deps .


FROM python:3.11-slim
# WeasyPrint (the evidence report's PDF) needs Pango and fonts; nothing else is installed
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 attest \
 && useradd --system --uid 10001 --gid attest --home-dir /home/attest --create-home --shell /usr/sbin/nologin attest \
 && install -d -o attest -g attest -m 0750 /var/lib/attest
COPY --from=build /opt/attest /opt/attest
# The home directory is the container's own: gunicorn keeps its control socket there ($HOME/.gunicorn), and on
# the data volume (/var/lib/attest, shared by web1 and web2) one web container's socket would replace the other's.
ENV PATH=/opt/attest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATTEST_ENV=production \
    ATTEST_INSTANCE_PATH=/var/lib/attest
WORKDIR /var/lib/attest
# never root: the app, the scheduler and the migrations all run as this user
USER 10001:10001
EXPOSE 8000
# liveness only (/healthz reads nothing); the proxy routes on /readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["attest"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
