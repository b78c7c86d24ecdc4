# Sourced by the bench/gpu_*.sh scripts on a lent GPU machine, which reaches no package index: installs the
# wheels carried in .whl/ (git-ignored; see bench/gpu_diffusion.sh for the list) into /tmp/site, which shadows
# the machine's own copies, and records the card. Exits the calling script when there are no wheels.
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no wheels in .whl/: make them as bench/gpu_diffusion.sh's header says, and carry .whl" >&2
  exit 2
fi
rm -rf /tmp/site && mkdir -p /tmp/site
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 3
else  # no pip: a wheel is a zip; unpacking it is the install
  for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site || exit 3; done
fi
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
