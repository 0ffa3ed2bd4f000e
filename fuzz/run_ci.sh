#!/usr/bin/env bash
# CI: replay the committed corpora, then a 60-second smoke fuzz (20 s per
# harness) that starts from them. Any crash, failed check or hang fails.
set -euo pipefail
cd "$(dirname "$0")"
SMOKE_SECONDS="${SMOKE_SECONDS:-20}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/load" "$scratch/quantize" "$scratch/decode"
run() { python3 "$@" -artifact_prefix="$scratch/" 2>&1 | grep -v -e '^INFO: Instrumenting' -e ' pulse ' -e ' REDUCE ' -e ' NEW '; }
# Replay: every input once, nothing mutated.
run fuzz_load.py -runs=0 -timeout=10 corpus/load seeds/load
run fuzz_quantize.py -runs=0 -timeout=20 corpus/quantize
run fuzz_decode.py -runs=0 -timeout=10 corpus/decode
# Smoke: new inputs go to the scratch folder, not to the committed corpus.
run fuzz_load.py "$scratch/load" corpus/load -dict=load.dict -max_len=4096 -timeout=10 \
  -max_total_time="$SMOKE_SECONDS"
run fuzz_quantize.py "$scratch/quantize" corpus/quantize -max_len=2048 -timeout=20 \
  -max_total_time="$SMOKE_SECONDS"
run fuzz_decode.py "$scratch/decode" corpus/decode -max_len=1024 -timeout=10 \
  -max_total_time="$SMOKE_SECONDS"
if ls "$scratch"/crash-* "$scratch"/timeout-* "$scratch"/oom-* >/dev/null 2>&1; then
  echo "fuzz: failures written to $scratch" >&2
  exit 1
fi
