package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Question: what fraction of the FP32 FMA peak does the Vector API SGEMM (JavaGemm on the common pool, 2 threads
 * here) reach on square C[s, s] = A[s, s] B[s, s], and does a call allocate?
 *
 * <p>Hypothesis: >= 60% of the FmaPeakBench figure at 1024 and 2048 (6 x 32 register tile, packed panels, KC =
 * 256), lower at 256 where packing and the pool hand-off weigh more; 0 B/op with {@code -prof gc}.
 *
 * <p>One op = one sgemm = 2 s^3 FLOP. GemmReport turns ops/s into GFLOP/s and % of peak.
 *
 * <p>Run: {@code ./moe4j bench GemmBench -f 1 -wi 2 -i 3 -w 1s -r 1s -prof gc}
 *
 * <p>Result (GemmReport, {@code -f 1 -wi 1 -i 2 -w 1s -r 1s}, 2 threads, shared 2-core Zen 5, FMA peak measured in
 * the same run 478 GFLOP/s): 256^3 256 GFLOP/s (54%), 512^3 300 (63%), 1024^3 310 (65%), 2048^3 305 (64%).
 * gc.alloc.rate.norm 1.2 / 7.8 / 60 / 488 B/op: ~8 KB per JMH iteration divided by the ops in it (it scales
 * with 1 / ops/s), i.e. nothing per call. The micro-kernel alone on L1-resident panels runs at 80-83% of the
 * one-thread FMA rate; the rest goes to packing and the C read-modify-write once per K block.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 2)
public class GemmBench {
    @Param({"256", "512", "1024", "2048"})
    public int size;

    private Arena arena;
    private MemorySegment a;
    private MemorySegment b;
    private MemorySegment c;
    private JavaGemm gemm;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        Random rnd = new Random(1);
        a = random(arena, rnd, (long) size * size);
        b = random(arena, rnd, (long) size * size);
        c = random(arena, rnd, (long) size * size);
        gemm = new JavaGemm(WorkerPool.common());
    }

    static MemorySegment random(Arena arena, Random rnd, long n) {
        MemorySegment s = arena.allocate(n * 4, 64);
        for (long i = 0; i < n; i++) {
            s.setAtIndex(Tensor.FLOAT, i, (float) rnd.nextGaussian());
        }
        return s;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    /** C = A B, all [s, s] row-major. */
    @Benchmark
    public void sgemm() {
        gemm.sgemm(false, false, size, size, size, 1f, a, 0, size, b, 0, size, 0f, c, 0, size);
    }

    public static double flopPerOp(int size) {
        return 2.0 * size * size * size;
    }
}
