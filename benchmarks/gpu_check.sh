#!/usr/bin/env bash
# The GPU check on a lent machine: install the wheels carried in wheels/ (if any), then run
# benchmarks/gpu_check.py with the checkout on PYTHONPATH (corelib is not installed).
#
#   benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options]     e.g. benchmarks/gpu_check.sh "$OUT" --commit abc1234
#   benchmarks/gpu_check.sh --fetch-wheels [PYTHON_VERSION]    on a networked machine: fill wheels/ (default 3.12)
#
# wheels/ is ignored by git and travels with the working tree (the lent machine has no network): pytest and
# pytest-timeout for step 1, pinned as in pyproject.toml's dev extra. faiss's GPU wheel (48 MB) is not
# fetched: with the 21 MB tree it exceeds the 64 MiB a lent machine receives; put it in wheels/ by hand where
# it fits, and step 3 uses it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    "$python" -m pip download --dest "$here/wheels" --no-deps --only-binary=:all: --python-version "${2:-3.12}" \
        pytest==9.2.0 pytest-timeout==2.4.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 pygments==2.21.0
    exit 0
fi
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options] | --fetch-wheels [PYTHON_VERSION]" >&2
    exit 2
fi
out="$1"; shift
mkdir -p "$out"
if compgen -G "$here/wheels/*.whl" > /dev/null; then
    # no index: only what is carried; each wheel on its own, so that one that does not fit this Python or CUDA
    # (recorded in the log) leaves the others installed
    for wheel in "$here"/wheels/*.whl; do
        "$python" -m pip install --quiet --no-index --no-deps --find-links "$here/wheels" "$wheel" \
            >> "$out/gpu_check.log" 2>&1 || echo "could not install $(basename "$wheel") (see $out/gpu_check.log)" >&2
    done
fi
cd "$here"
set +e
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" benchmarks/gpu_check.py --out "$out" "$@"
rc=$?
if [[ ! -f "$out/gpu_check.json" ]]; then  # it stopped before its first record (an import): its stderr says why
    echo "benchmarks/gpu_check.py exited with $rc before writing gpu_check.json; its error is on stderr" >> "$out/gpu_check.log"
fi
exit $rc
