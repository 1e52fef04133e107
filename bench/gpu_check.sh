#!/usr/bin/env bash
# The GPU check (docs/operations.md#gpu-check): on a machine with CUDA, install vLLM in the llm Bento's own
# environment, run tests/gpu, serve a small model through the llm Bento and the gateway, and write
# gpu_check.json (tokens/s raw vLLM vs through the gateway, sleep/wake times, versions, each step's status)
# into $OUT, else bench/results/. Idempotent; every process it starts is stopped on exit.
#
#   bench/gpu_check.sh [--model tiny|HF_ID|DIR] [--requests 256] [--concurrency 32] [--max-tokens 128]
#                      [--budget-s 540] [--skip tests_gpu|raw_vllm|bento|gateway] [--no-install]
#
# Exit: 0 passed, 1 a step failed, 2 bad arguments, 3 no CUDA (nothing ran), 4 the model could not be fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
export OUT="$(cd "$OUT_DIR" && pwd)"
PIDS="$OUT/gpu_check.pids"
: > "$PIDS"

PY=.venv/bin/python
[ -x "$PY" ] || PY="$(command -v python3.11 || command -v python3)"

runner=""
cleanup() {
    # the runner's own group, then every server group it recorded (each runs in its own session)
    if [ -n "$runner" ]; then kill -TERM -- "-$runner" 2>/dev/null; fi
    while read -r pid; do
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
    done < "$PIDS"
    sleep 2
    if [ -n "$runner" ]; then kill -KILL -- "-$runner" 2>/dev/null; fi
    while read -r pid; do
        [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    done < "$PIDS"
    rm -f "$PIDS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setsid "$PY" bench/gpu_check.py "$@" &
runner=$!
wait "$runner"
rc=$?
runner_done=$runner
runner=""
kill -0 -- "-$runner_done" 2>/dev/null && kill -TERM -- "-$runner_done" 2>/dev/null
exit "$rc"
