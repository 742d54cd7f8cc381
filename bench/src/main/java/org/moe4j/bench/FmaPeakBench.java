package org.moe4j.bench;

import java.util.concurrent.TimeUnit;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Question: what FP32 FMA throughput can Vector API code reach on this machine, the ceiling against which the
 * GEMMs are judged (GemmReport divides every GEMM's GFLOP/s by this figure measured in the same run)?
 *
 * <p>Hypothesis: 16 independent 512-bit FMA chains per thread hide the 4-cycle latency of 2 FMA pipes, so two
 * threads reach ~2 x 64 FLOP/cycle, i.e. the 530-567 GFLOP/s of BASELINES.md.
 *
 * <p>One op = {@link #ITERS} iterations x 16 vectors x L lanes x 2 FLOP = {@link #FLOP_PER_OP} FLOP per thread
 * (L = 16 at the default 512 bits here; {@code -Dmoe4j.simd.bits=256} measures the 256-bit peak);
 * JMH sums ops/s over the two threads, so GFLOP/s = ops/s x FLOP_PER_OP / 1e9. The accumulators are reduced and
 * returned, so nothing can be dropped; acc * 0.9999999 + 1e-7 stays bounded.
 *
 * <p>Run: {@code ./moe4j bench FmaPeakBench -f 1 -wi 2 -i 3 -w 1s -r 1s}
 *
 * <p>Result: 478-485 GFLOP/s with 2 threads when the shared machine was quiet (down to ~120 under load from other
 * builds), 235-246 GFLOP/s on one thread ({@code -t 1}); 0.8 B/op.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Threads(2)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class FmaPeakBench {
    /** The kernels' species ({@code -Dmoe4j.simd.bits}): the peak at the width the GEMM runs at. */
    static final VectorSpecies<Float> S = org.moe4j.simd.Simd.FLOAT;
    public static final int ITERS = 100_000;
    public static final double FLOP_PER_OP = (double) ITERS * 16 * S.length() * 2;

    float mul = 0.9999999f;
    float add = 1e-7f;

    @Benchmark
    public float fma16() {
        FloatVector m = FloatVector.broadcast(S, mul);
        FloatVector a = FloatVector.broadcast(S, add);
        FloatVector c0 = FloatVector.broadcast(S, 1f);
        FloatVector c1 = FloatVector.broadcast(S, 2f);
        FloatVector c2 = FloatVector.broadcast(S, 3f);
        FloatVector c3 = FloatVector.broadcast(S, 4f);
        FloatVector c4 = FloatVector.broadcast(S, 5f);
        FloatVector c5 = FloatVector.broadcast(S, 6f);
        FloatVector c6 = FloatVector.broadcast(S, 7f);
        FloatVector c7 = FloatVector.broadcast(S, 8f);
        FloatVector c8 = FloatVector.broadcast(S, 9f);
        FloatVector c9 = FloatVector.broadcast(S, 10f);
        FloatVector c10 = FloatVector.broadcast(S, 11f);
        FloatVector c11 = FloatVector.broadcast(S, 12f);
        FloatVector c12 = FloatVector.broadcast(S, 13f);
        FloatVector c13 = FloatVector.broadcast(S, 14f);
        FloatVector c14 = FloatVector.broadcast(S, 15f);
        FloatVector c15 = FloatVector.broadcast(S, 16f);
        for (int i = 0; i < ITERS; i++) {
            c0 = c0.fma(m, a);
            c1 = c1.fma(m, a);
            c2 = c2.fma(m, a);
            c3 = c3.fma(m, a);
            c4 = c4.fma(m, a);
            c5 = c5.fma(m, a);
            c6 = c6.fma(m, a);
            c7 = c7.fma(m, a);
            c8 = c8.fma(m, a);
            c9 = c9.fma(m, a);
            c10 = c10.fma(m, a);
            c11 = c11.fma(m, a);
            c12 = c12.fma(m, a);
            c13 = c13.fma(m, a);
            c14 = c14.fma(m, a);
            c15 = c15.fma(m, a);
        }
        FloatVector s = c0.add(c1).add(c2.add(c3)).add(c4.add(c5).add(c6.add(c7)))
                .add(c8.add(c9).add(c10.add(c11)).add(c12.add(c13).add(c14.add(c15))));
        return s.reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
    }
}
