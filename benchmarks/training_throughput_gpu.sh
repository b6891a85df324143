#!/usr/bin/env bash
# Training throughput on a lent GPU, old loop against new, in one device call (../shared/device/README.md).
#
# 1. Here, once (copies the GPU dependencies and extracts the old training package into the ignored .gpu/):
#      bash benchmarks/training_throughput_gpu.sh --stage
# 2. On the device, one `run` call with carry [".gpu"] and timeout_s 560:
#      bash benchmarks/training_throughput_gpu.sh
#    Results come back under $OUT: training_throughput_cuda.json (bundled-size SV-Net: old loop, new loop at
#    batch 4 and 16, new loop in float32), training_throughput_cuda_paper.json (the paper's 8.7M-weight
#    SV-Net, old and new at batch 4) and the log. Put the numbers in docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage" ]; then
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo /.gpu/ >> "$exclude"
    mkdir -p .gpu/baseline && cp ../shared/device/gpu-env.sh ../shared/device/orbitseg-gpu-deps.tar.xz .gpu/ &&
        python3 benchmarks/training_throughput.py --extract-baseline .gpu/baseline
    exit $?
fi
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .gpu/gpu-env.sh || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
common=(--device cuda --baseline .gpu/baseline --studies 4 --workers 8 --epochs 3 --patches 256 --repeats 1
        --cache /tmp/orbitseg-cache)
timeout 330 python3 benchmarks/training_throughput.py "${common[@]}" --configs old-b4,new-b4,new-b16,new-float32-b4 \
    --out "$OUT/training_throughput_cuda.json" 2>&1 | tee "$OUT/training_throughput_cuda.log"
timeout 150 python3 benchmarks/training_throughput.py "${common[@]}" --preset paper --configs old-b4,new-b4 \
    --out "$OUT/training_throughput_cuda_paper.json" 2>&1 | tee -a "$OUT/training_throughput_cuda.log"
