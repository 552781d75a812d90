#!/usr/bin/env bash
# Start one ASGI web process with the server named by WEB_SERVER (uvicorn or daphne).
# The server is a switch, not a fork: both serve the same application. uvicorn is the
# default: it streams request bodies (daphne's Twisted layer parses a whole multipart body
# in memory, over a gigabyte for a 100 MB upload) and spends less CPU per WebSocket frame.
# Client addresses come from TRUSTED_PROXY_COUNT in the app, not from the server.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV_BIN:-.venv/bin}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
# Frames larger than the protocol allows are refused by the server itself (plus slack for
# the JSON envelope); the application answers smaller oversize frames with an error frame.
MAX_FRAME=$(( ${WS_MAX_FRAME_BYTES:-262144} * 4 ))
# SIGTERM (a rolling restart): uvicorn stops listening at once, closes every WebSocket with
# 1012 "service restart" (clients reconnect elsewhere and sync), lets requests and handlers in
# flight finish for up to WEB_SHUTDOWN_TIMEOUT_SECONDS, then cancels what is left and exits.
# daphne has no drain: it cancels the application and drops the sockets (clients see 1006).
# docs/operations.md, "Rolling restarts".
SHUTDOWN_TIMEOUT=${WEB_SHUTDOWN_TIMEOUT_SECONDS:-10}
case "${WEB_SERVER:-uvicorn}" in
  daphne)
    exec "$BIN/daphne" --bind "$HOST" --port "$PORT" --websocket_timeout -1 chat_project.asgi:application ;;
  uvicorn)
    exec "$BIN/uvicorn" chat_project.asgi:application --host "$HOST" --port "$PORT" \
      --loop uvloop --http httptools --ws websockets-sansio --ws-max-size "$MAX_FRAME" \
      --ws-per-message-deflate false --no-proxy-headers --lifespan off --no-server-header \
      --timeout-graceful-shutdown "$SHUTDOWN_TIMEOUT" \
      ${UVICORN_ARGS:-} ;;
  *)
    echo "WEB_SERVER must be daphne or uvicorn, not '${WEB_SERVER}'" >&2; exit 2 ;;
esac
