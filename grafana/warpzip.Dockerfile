# Image for the warpzip service, built from the repository root by grafana/docker-compose.yml:
#   docker compose -f grafana/docker-compose.yml up --build
FROM python:3.11-slim
WORKDIR /srv/warpzip
COPY pyproject.toml README.md ./
COPY app ./app
COPY warp ./warp
COPY bench ./bench
RUN pip install --no-cache-dir .
# one runtime root inside the container for the embedded device's files
ENV WARPZIP_ROOT=/run/warpzip
EXPOSE 8080
# 0.0.0.0 so the published port reaches it; Prometheus, sharing this network namespace, scrapes 127.0.0.1:8080
CMD ["warpzip", "serve", "--host", "0.0.0.0", "--port", "8080"]
