#!/usr/bin/env bash
# `make bench`: every benchmark and evaluation, each printing its table.
# BENCH_QUICK=1 runs smaller stores and fewer cases (minutes instead of most of an hour).
# Each benchmark exits non-zero when it fails or misses a target it prints (bench/targets.py);
# every one still runs, and the script exits 1 at the end, listing them.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
quick=${BENCH_QUICK:-0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=()
run() {
  echo
  echo "### $*"
  if ! PYTHONPATH=. "$PY" "$@"; then
    echo "(failed or missed a target: $*)"
    failed+=("$1")
  fi
}

if [ "$quick" = 1 ]; then
  run bench/llm_bench.py --dtypes bfloat16
  run bench/pipeline_bench.py --turns 20000 --people 200 --messages 100
  run bench/recall_eval.py --limit 12
  run bench/reply_quality.py --seeds 1 --anchor 16
  run bench/consolidation_eval.py --people 32
  run bench/consolidation_bench.py
  run bench/retrieval_eval.py --people 10 --dir "$tmp/retrieval"
  run bench/recall_latency.py --dir "$tmp/latency" --turns 100000 --people 200 --heavy 20000
  run bench/import_throughput.py --messages 10000 --dir "$tmp/import"
else
  run bench/llm_bench.py
  run bench/pipeline_bench.py
  run bench/recall_eval.py
  run bench/reply_quality.py
  run bench/consolidation_eval.py
  run bench/consolidation_bench.py
  run bench/retrieval_eval.py --dir "$tmp/retrieval"
  run bench/recall_latency.py --dir "$tmp/latency"
  run bench/import_throughput.py --messages 100000 --dir "$tmp/import"
fi
run bench/telegram_first_text.py
run bench/reminder_parse.py
run bench/followup_eval.py
run bench/speech_eval.py --limit "$([ "$quick" = 1 ] && echo 8 || echo 20)"
run bench/ocr_eval.py
run bench/voice_first_text.py --runs "$([ "$quick" = 1 ] && echo 5 || echo 12)"
run bench/slack_bench.py
run bench/matrix_latency.py
run bench/load_test.py --people "$([ "$quick" = 1 ] && echo 20 || echo 50)" --messages 6 --max-new-tokens 32
[ -f bench/adapter_bench.py ] && run bench/adapter_bench.py
if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "make bench: ${#failed[@]} benchmark(s) failed or missed a target: ${failed[*]}"
  exit 1
fi
echo
echo "make bench: every benchmark ran and met its targets"
