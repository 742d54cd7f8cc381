#!/usr/bin/env bash
# moe4j's StepBench and the PyTorch eager MoE (torch_moe_step.py) on the same configs, in one script, alternating
# rounds (the machine is shared and noisy: compare the medians of the rounds, as BASELINES.md asks).
# Needs: ./moe4j build (bench/target/benchmarks.jar) and Debian's python3-torch + libopenblas0-openmp.
# Usage: bench/scripts/compare-torch.sh [rounds] [small|bench ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}; shift || true
configs=("${@:-small bench}")
java_home=$(./moe4j java-home)
for r in $(seq 1 "$rounds"); do
  echo "## round $r: moe4j"
  MOE4J_THREADS=2 "$java_home/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
    -cp bench/target/benchmarks.jar org.moe4j.bench.StepBench ${configs[*]} --backends java,onednn 2>&1 | grep -v '^WARNING'
  echo "## round $r: PyTorch"
  env -u OPENBLAS_CORETYPE LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2 \
    /usr/bin/python3 bench/scripts/torch_moe_step.py ${configs[*]}
done
