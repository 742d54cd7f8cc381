#!/usr/bin/env bash
# moe4j's StepBench and the PyTorch eager MoE (torch_moe_step.py) on the same configs, in one script, alternating
# rounds (the machine is shared and noisy: compare the medians of the rounds, as BASELINES.md asks).
# Needs: ./moe4j build (bench/target/benchmarks.jar) and Debian's python3-torch + libopenblas0-openmp.
# Usage: bench/scripts/compare-torch.sh [rounds] [small|bench ...]
# Env: BACKENDS (StepBench --backends, default java,onednn), PRECISION (StepBench --precision, default fp32,bf16:
# moe4j's BF16 mixed-precision step beside its FP32 one; PyTorch runs FP32 eager, the comparison the issue asks for).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}; shift || true
configs=("${@:-small bench}")
java_home=$(./moe4j java-home)
# OpenBLAS picks its kernel from CPUID; on a CPU it does not know (Sapphire Rapids in a VM for 0.3.21) it falls back
# to Prescott (SSE3), 8x below the CPU's FMA peak. Name the newest core type the CPU's flags allow instead
# (override with TORCH_OPENBLAS_CORETYPE); print it, so the comparison says what PyTorch ran on.
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
if [[ -n "${TORCH_OPENBLAS_CORETYPE:-}" ]]; then coretype=$TORCH_OPENBLAS_CORETYPE
elif [[ $flags == *avx512_bf16* ]]; then coretype=Cooperlake
elif [[ $flags == *avx512f* ]]; then coretype=SkylakeX
elif [[ $flags == *avx2* ]]; then coretype=Haswell
else coretype=""; fi
echo "PyTorch: OpenBLAS (OpenMP build), OPENBLAS_CORETYPE=${coretype:-(unset: OpenBLAS detects)}"
for r in $(seq 1 "$rounds"); do
  echo "## round $r: moe4j"
  MOE4J_THREADS=2 "$java_home/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
    -cp bench/target/benchmarks.jar org.moe4j.bench.StepBench ${configs[*]} --backends "${BACKENDS:-java,onednn}" --precision "${PRECISION:-fp32,bf16}" 2>&1 | grep -v '^WARNING'
  echo "## round $r: PyTorch"
  env -u OPENBLAS_CORETYPE ${coretype:+OPENBLAS_CORETYPE=$coretype} LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
    OMP_NUM_THREADS=2 /usr/bin/python3 bench/scripts/torch_moe_step.py ${configs[*]}
done
