# cvit-bench submission server: serves a board from a mounted volume (HF Spaces' docker SDK runs the same image).
#   docker build -t cvit-board .
#   docker run -p 8000:8000 -v /srv/board:/board cvit-board
# /board holds the board (submissions/, site/, server/ with the SQLite file) and data/ (the prepared references
# the board re-scores against, from `cvit-bench prepare --out /board/data`). Issue tokens with
#   docker run --rm -v /srv/board:/board cvit-board cvit-bench leaderboard token add you@example.org --board /board --maintainer
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
WORKDIR /app
# The core install re-scores (no torch); the server extra adds the web server and its database.
COPY . /app
RUN pip install "/app[server]" && useradd --create-home --uid 1000 board && mkdir -p /board && chown board /board
USER board
VOLUME ["/board"]
EXPOSE 8000
# HF Spaces sets PORT (7860) and mounts persistent storage at /data: set BOARD=/data/board there.
# --proxy-headers: the platform's proxy terminates TLS.
ENV BOARD=/board
CMD ["sh", "-c", "exec cvit-bench leaderboard serve --board \"$BOARD\" --host 0.0.0.0 --port ${PORT:-8000} --proxy-headers"]
