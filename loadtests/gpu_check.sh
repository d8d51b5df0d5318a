#!/usr/bin/env bash
# radserve's offline GPU check (built by `make gpu-bundle`; loadtests/gpu_check.py does the work).
#
#   build/gpu-bundle/check.sh OUT_DIR [--cpu-dry-run] [--budget-seconds S] [--only STAGE...]
#
# Needs python3 (3.12 on the GPU host) with torch, torchvision, numpy, onnxruntime, opencv, grpcio,
# scikit-learn; no network. Unpacks the bundle into a temporary folder (tritonserver, the Python
# packages the host lacks, radserve), runs the time-boxed stages and writes OUT_DIR/gpu-check.json and
# OUT_DIR/gpu-check.md. --cpu-dry-run (on a radserve development machine, with PYTHON pointing at its
# virtual environment's python) runs the same stages on the CPU, small, to exercise the script.
set -uo pipefail
export PYTHONUNBUFFERED=1
stamp() { echo "$(date +%H:%M:%S) check.sh $*"; }

BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-${OUT_DIR:-$PWD/gpu-check-out}}"
shift || true
PY="${PYTHON:-python3}"
DRY_RUN=0
for argument in "$@"; do [ "$argument" = "--cpu-dry-run" ] && DRY_RUN=1; done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/radserve-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
stamp "bundle $BUNDLE, work $WORK, out $OUT, python $("$PY" -V 2>&1)"

# Python unpacks (a bare host may lack the xz program); the "tar" filter keeps executable bits
unpack() {
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$1" "$2" \
    || { stamp "cannot unpack $1"; exit 2; }
}
SITE="$WORK/site"
mkdir -p "$SITE" "$WORK/radserve"
unpack "$BUNDLE/tritonserver.tar.xz" "$SITE"
unpack "$BUNDLE/site-packages.tar.xz" "$SITE"
unpack "$BUNDLE/dicom.tar.xz" "$WORK"
"$PY" -m zipfile -e "$BUNDLE"/radserve-*.whl "$WORK/radserve" || { stamp "cannot unpack the radserve wheel"; exit 2; }
stamp "unpacked: $(du -sh "$SITE" | cut -f1) of packages and tritonserver"

if [ "$DRY_RUN" = 1 ]; then
  # the bundle's packages are for Python 3.12: a dry run takes radserve from the wheel and the rest
  # (tritonserver included) from the development environment
  export PYTHONPATH="$WORK/radserve${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$WORK/radserve:$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

cd "$WORK"  # never the repository root: its radserve/ folder would shadow the wheel
timeout --kill-after=10 480 "$PY" -m radserve.loadtests.gpu_check --work "$WORK/check" --out "$OUT" \
  --dicom "$WORK/dicom" "$@"
status=$?
stamp "finished with exit code $status; report in $OUT/gpu-check.md"
cp "$WORK/check/tritonserver.log" "$OUT/" 2>/dev/null || true
exit $status
