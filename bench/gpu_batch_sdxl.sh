#!/usr/bin/env bash
# Prepared GPU run for issues 11 and 13 (not run yet: no GPU was lent to the session that wrote it).
#  1. bench/batch.py: N = 1, 2, 4, 8 calls batched into one step vs one by one, same run, on the
#     full-size SD-Turbo architecture, then N = 1, 2, 4 on the full-size SDXL-Turbo architecture
#     (random weights, same FLOPs), 512x512, 1 step, fp16, no compile.
#  2. bench/sdxl.py: SDXL-Turbo architecture through our engine vs diffusers SDXL img2img on the same
#     modules, and with an image prompt (SDXL IP-Adapter shapes) vs without.
# About 3-5 minutes on an H100. Wheels: as bench/gpu_diffusion.sh says (carry .whl).
#
#   bash bench/gpu_batch_sdxl.sh          # on the GPU machine; JSON + logs go to $OUT
#   bash bench/gpu_batch_sdxl.sh --dry    # here, on CPU: the same steps with the tiny models
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
started=$(date +%s)

if [ "${1:-}" = "--dry" ]; then
  BATCH=(--device cpu --dtype float32 --size 64 --steps 1 --frames 4 --rounds 2 --warmup 1 --threads 1)
  BATCH_SD=(--model tiny)
  BATCH_SDXL=(--model tiny-sdxl)
  SDXL=(--tiny --device cpu --dtype float32 --size 64 --steps 1 --frames 4 --warmup 1 --threads 1)
  LIMIT=120
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  source bench/gpu_wheels.sh  # installs the carried wheels into /tmp/site, records the card
  BATCH=(--device cuda --dtype float16 --size 512 --steps 1 --frames 24 --rounds 6 --warmup 3)
  BATCH_SD=(--full-size sd)
  BATCH_SDXL=(--full-size sdxl)
  SDXL=(--full-size --device cuda --dtype float16 --size 512 --steps 1 --frames 40 --warmup 5)
  LIMIT=200
fi

python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import sys, numpy, torch, diffusers, transformers, huggingface_hub, streamdiffusion
print("python", sys.version.split()[0], "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| diffusers", diffusers.__version__, "| transformers", transformers.__version__,
      "| huggingface_hub", huggingface_hub.__version__, "| cuda", torch.cuda.is_available())
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "imports failed (see $OUT/versions.txt)" >&2; exit 4; }

run() {  # name script args...
  local name=$1 script=$2
  shift 2
  echo "== $name (limit ${LIMIT}s)"
  timeout "$LIMIT" python3 "bench/$script" "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -i -E "warn|pytree|config attributes|Loading pipeline" "$OUT/$name.log"
  [ $rc = 0 ] || echo "== $name exited with $rc (124 = timed out)"
}

run batch-sd batch.py "${BATCH_SD[@]}" "${BATCH[@]}" --sessions 1 2 4 8
run batch-sdxl batch.py "${BATCH_SDXL[@]}" "${BATCH[@]}" --sessions 1 2 4
run sdxl sdxl.py "${SDXL[@]}"
echo "== done in $(( $(date +%s) - started )) s; results in $OUT"
