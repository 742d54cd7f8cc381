#!/usr/bin/env bash
# The Java GEMM (GemmReport) or the whole training step (StepBench) at 512- and 256-bit vectors
# (-Dmoe4j.simd.bits, see org.moe4j.simd.Simd), alternating widths round by round on one machine: the machine is
# shared and noisy, so compare the rounds side by side. The FMA peak printed with each is measured at that round's
# width (FmaPeakBench and StepBench use the kernels' species), so compare GFLOP/s and tok/s across widths, and
# % of peak within one.
# Needs: ./moe4j build (bench/target/benchmarks.jar).
# Usage: bench/scripts/compare-widths.sh gemm|step [rounds] [widths, default "512 256"]
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:?usage: compare-widths.sh gemm|step [rounds] [widths]}
rounds=${2:-2}
widths=${3:-512 256}
java_home=$(./moe4j java-home)
java=("$java_home/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED)
for r in $(seq 1 "$rounds"); do
  for w in $widths; do
    echo "## round $r: $w-bit vectors ($what)"
    case "$what" in
      gemm)
        # square 512^3 and 1024^3 plus the FMA peak of the same run; the JMH fork inherits the host's -D flags
        MOE4J_THREADS=2 "${java[@]}" "-Dmoe4j.simd.bits=$w" -cp bench/target/benchmarks.jar \
          org.moe4j.bench.GemmReport 'org.moe4j.bench.(FmaPeakBench|GemmBench)\.' -p size=512,1024 \
          -f 1 -wi 2 -i 3 -w 2s -r 1s 2>&1 | grep -E '^\| |^GEMM report'
        ;;
      step)
        MOE4J_THREADS=2 "${java[@]}" "-Dmoe4j.simd.bits=$w" -cp bench/target/benchmarks.jar \
          org.moe4j.bench.StepBench small --backends java --warmup 8 --steps 3 2>&1 | grep -v '^WARNING'
        ;;
      *) echo "compare-widths.sh: '$what': expected gemm or step" >&2; exit 2 ;;
    esac
  done
done
