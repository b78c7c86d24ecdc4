#!/usr/bin/env bash
# Full-size diffusion benchmark for a lent GPU: SD-Turbo architecture (SD 2.1 UNet, OpenCLIP-H
# text encoder, TAESD) with random weights, 512x512, 1 step, fp16, with and without torch.compile;
# ours vs plain diffusers img2img in the same run (bench/diffusion.py). About 5-8 minutes.
#
#   bash bench/gpu_diffusion.sh          # on the GPU machine; JSON + logs go to $OUT
#   bash bench/gpu_diffusion.sh --dry    # here, on CPU: the same steps with the tiny model
#
# The GPU machine's Python 3.12 has transformers 5 / huggingface_hub 1.x, too new for
# diffusers 0.24, and no network: the wheels this needs are carried in .whl/ (git-ignored;
# carry it with the run) and installed into /tmp/site, which shadows the machine's copies.
# Make them here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.24.0 transformers==4.46.3 huggingface_hub==0.25.2 tokenizers==0.20.3 streamdiffusion==0.1.1 \
#     accelerate==1.15.0 pydantic==2.13.4 pydantic_core==2.46.4 annotated-types typing-extensions typing-inspection \
#     safetensors regex pyyaml requests urllib3 idna charset-normalizer certifi filelock fsspec packaging tqdm \
#     importlib_metadata zipp pillow psutil
# (numpy and torch come from the machine.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
started=$(date +%s)

if [ "${1:-}" = "--dry" ]; then
  COMMON=(--tiny --device cpu --dtype float32 --size 64 --steps 1 --frames 6 --warmup 1 --rounds 2)
  LIMIT_NONE=120
  LIMIT_COMPILE=300
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  source bench/gpu_wheels.sh  # installs the carried wheels into /tmp/site, records the card
  COMMON=(--full-size --device cuda --dtype float16 --size 512 --steps 1 --frames 60 --warmup 5 --rounds 3)
  LIMIT_NONE=180
  LIMIT_COMPILE=330
fi

python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import sys, numpy, torch, diffusers, transformers, huggingface_hub, streamdiffusion
print("python", sys.version.split()[0], "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| diffusers", diffusers.__version__, "| transformers", transformers.__version__,
      "| huggingface_hub", huggingface_hub.__version__, "| cuda", torch.cuda.is_available())
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "imports failed (see $OUT/versions.txt)" >&2; exit 4; }

run() {  # name limit_s args...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" python3 bench/diffusion.py "${COMMON[@]}" "$@" --json "$OUT/diffusion-$name.json" \
    > "$OUT/diffusion-$name.log" 2>&1
  local rc=$?
  grep -v -i -E "warn|pytree|config attributes|Loading pipeline" "$OUT/diffusion-$name.log"
  [ $rc = 0 ] || echo "== $name exited with $rc (124 = timed out)"
}

run none "$LIMIT_NONE" --acceleration none
run compile "$LIMIT_COMPILE" --acceleration compile --no-reload
echo "== done in $(( $(date +%s) - started )) s; results in $OUT"
