#!/usr/bin/env bash
# End to end on a lent GPU: the real server (full-size SD-Turbo architecture, random weights, fp16, 512², 1 step,
# torch.compile reduce-overhead, batched device steps), then N = 1, 2, 4, 8 aiortc callers on the same machine;
# per-call fps and round trip, printed beside the engine-only figures (bench/capacity.py) of the same run.
# About 6-9 minutes. NOT RUN YET: no GPU was lent to the sessions that wrote it. The server runs with the
# defaults (--video-codec auto: the encoder measured cheapest; --degradation balanced: the working side steps
# down only below --min-fps, here 1); its /healthz capacity (working_side, room) is printed after the calls.
#
#   bash bench/gpu_e2e.sh          # on the GPU machine (carry .whl); JSON + logs go to $OUT
#   bash bench/gpu_e2e.sh --dry    # here, on CPU: the same steps with the tiny model at 128²
#   bash bench/gpu_e2e.sh --cluster [--dry]  # the same callers through `speakdraw cluster`: one worker per GPU
#     (nvidia-smi names the cards), N = 2, 4, 8, 16 callers through the front door, per-worker calls from /healthz.
#     NOT RUN: it needs Ray on the GPU machine, and the ray wheel (79 MB for 2.60, cp311) alone is over what a lent
#     machine may be carried (64 MiB); the script stops with that message where `import ray` fails.
#
# The GPU machine reaches no package index: everything the server needs beyond torch/numpy comes as wheels in
# .whl/ (git-ignored; carry it). bench/gpu_diffusion.sh lists the diffusion stack; add the WebRTC side:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     aiortc aioice av pyee pylibsrtp google-crc32c cffi pycparser pyopenssl cryptography dnspython ifaddr \
#     aiohttp aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl idna \
#     prometheus-client qrcode onnxruntime scikit-image
# (av alone is ~30 MB: keep the carried total under 64 MiB — drop what the e2e run does not import.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
started=$(date +%s)

CLUSTER=0
if [ "${1:-}" = "--cluster" ]; then CLUSTER=1; shift; fi
if [ "${1:-}" = "--dry" ]; then
  DEVICE=cpu; MODEL=tiny; SIZE=128; ACCEL=(--acceleration none); SECONDS_PER=6; CALLS=(1 2 4)
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  source bench/gpu_wheels.sh  # installs the carried wheels into /tmp/site, records the card
  DEVICE=cuda; MODEL=full-size; SIZE=512; ACCEL=(--acceleration compile --compile-mode reduce-overhead)
  SECONDS_PER=15; CALLS=(1 2 4 8)
fi

if [ "$CLUSTER" = 1 ]; then
  if ! python3 -c "import ray" 2>/dev/null; then
    echo "--cluster needs Ray on this machine (pip install -e '.[cluster]'); its wheel is too big to carry" >&2
    exit 4
  fi
  if [ "$DEVICE" = cuda ]; then
    GPUS=$(nvidia-smi -L | wc -l); WORKER_FLAGS=(--gpus-per-worker 1 --workers "$GPUS"); CALLS=(2 4 8 16)
    nvidia-smi -L | tee "$OUT/e2e-cluster-gpus.txt"
  else
    GPUS=0; WORKER_FLAGS=(--workers 2 --cpus-per-worker 1 --cpu-cores 1); CALLS=(2 4)
  fi
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RAY_USAGE_STATS_ENABLED=0 python3 -m server.cli cluster "${WORKER_FLAGS[@]}" --host 127.0.0.1 --port "$PORT" \
    --https-port 0 --engine tiny --model "$MODEL" --device "$DEVICE" "${ACCEL[@]}" --stt off --matting off \
    --max-sessions 16 --min-fps 1 --log-level warning > "$OUT/e2e-cluster.log" 2>&1 &
  FRONT=$!
  trap 'kill $FRONT 2>/dev/null; wait $FRONT 2>/dev/null' EXIT
  WANT=$([ "$GPUS" -gt 0 ] && echo "$GPUS" || echo 2)
  for _ in $(seq 1 480); do  # every worker compiles its model
    ALIVE=$(curl -fs "http://127.0.0.1:$PORT/healthz" 2>/dev/null | python3 -c \
      'import json,sys; print(sum(w["state"] == "alive" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null)
    [ "${ALIVE:-0}" -ge "$WANT" ] && break
    sleep 1
  done
  echo "== cluster: ${ALIVE:-0} of $WANT workers alive: $(curl -fs "http://127.0.0.1:$PORT/healthz")"
  echo "== $SIZE² callers through the front door (one URL), each honouring its worker's send hint"
  timeout 500 python3 bench/e2e_calls.py "http://127.0.0.1:$PORT" --calls "${CALLS[@]}" --seconds "$SECONDS_PER" \
    --size "$SIZE" --json "$OUT/e2e-cluster-calls.json" 2>&1 | grep -E "^N="
  curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^speakdraw_frames_out_total' | tee "$OUT/e2e-cluster-frames.txt"
  echo "== done in $(( $(date +%s) - started )) s; results in $OUT"
  exit 0
fi

echo "== engine only: batched vs round-robin on one device runner"
timeout 300 python3 bench/capacity.py --engines tiny $([ "$MODEL" = full-size ] && echo --full-size) \
  --device "$DEVICE" --size "$SIZE" --calls "${CALLS[@]}" --seconds 6 --no-calls "${ACCEL[@]}" \
  --out "$OUT/e2e-engine.json" > "$OUT/e2e-engine.log" 2>&1
grep -E "^tiny|device:" "$OUT/e2e-engine.log"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m server.cli serve --host 127.0.0.1 --port "$PORT" --https-port 0 --engine tiny --model "$MODEL" \
  --device "$DEVICE" "${ACCEL[@]}" --stt off --matting off --max-sessions 16 --min-fps 1 \
  > "$OUT/e2e-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 240); do  # the compile warm-up takes a while
  if curl -fs "http://127.0.0.1:$PORT/healthz" 2>/dev/null | grep -q '"engine_ready": true'; then break; fi
  sleep 1
done
echo "== server: $(curl -fs "http://127.0.0.1:$PORT/healthz")"
echo "== $SIZE² callers through WebRTC (each honours the server's send hint)"
timeout 400 python3 bench/e2e_calls.py "http://127.0.0.1:$PORT" --calls "${CALLS[@]}" --seconds "$SECONDS_PER" \
  --size "$SIZE" --json "$OUT/e2e-calls.json" 2>&1 | grep -E "^N="
echo "== capacity after the calls: $(curl -fs "http://127.0.0.1:$PORT/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["capacity"])')"
echo "== done in $(( $(date +%s) - started )) s; results in $OUT"
