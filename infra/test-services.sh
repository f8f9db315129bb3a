#!/usr/bin/env bash
# Run a command with the services the tests need, starting only what is not already running
# and stopping only what this script started.
set -euo pipefail

started_redis=0
cleanup() {
  if [ "$started_redis" = 1 ]; then
    redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null; then
    echo "Redis is not running on 127.0.0.1:6379 and redis-server is not installed." >&2
    echo "Install it (apt-get install redis-server) or start Redis, then run make test again." >&2
    exit 1
  fi
  echo "starting Redis on 127.0.0.1:6379 for the tests"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  started_redis=1
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

# Debian's Chromium for the web page's browser tests (tests/web, driven through Playwright)
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests (tests/web)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The browser tests (tests/web) need Debian's Chromium at /usr/bin/chromium." >&2
    echo "Install it as root (apt-get install chromium), then run make test again." >&2
    exit 1
  fi
fi

# espeak-ng synthesizes the voice notes the media tests and bench/speech_eval.py transcribe
if ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing espeak-ng for the voice-note tests"
    apt-get install -y -qq espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }
  else
    echo "espeak-ng is missing: install it (apt-get install espeak-ng), then run make test again." >&2
    exit 1
  fi
fi

# Synapse for the Matrix tests, in its own venv (idempotent: ~35 s the first time, then instant);
# the test session itself starts and stops the server.
bash "$(dirname "$0")/synapse/setup.sh"
# vLLM's CPU build for the remote-generation tests, in its own venv (~2 min and ~3.5 GB the first
# time, then instant); the test session starts and stops the server
bash "$(dirname "$0")/vllm/setup.sh"

"$@"
