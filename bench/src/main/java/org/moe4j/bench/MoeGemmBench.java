package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.moe4j.simd.JavaGemm;
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
 * Question: how close to the FMA peak are the expert GEMMs of an MoE layer, whose row count R (tokens routed to
 * one expert) is small?
 *
 * <p>Hypothesis: >= 45% of peak at R = 64..256 (both threads work on N slices; packing op(B) costs ~k n per call
 * against 2 R k n FLOP, so R = 16 is packing-bound and lower).
 *
 * <p>Shapes, with x [R, d], W1 [h, d], W2 [d, h], all row-major:
 * <ul>
 *   <li>up: H[R, h] = x W1^T (transB: m = R, n = h, k = d)</li>
 *   <li>down: Y[R, d] = H W2^T (transB: m = R, n = d, k = h)</li>
 *   <li>dW1: dW1[h, d] = dH^T x (transA, the weight gradient of backward: m = h, n = d, k = R)</li>
 * </ul>
 * Each op = 2 R d h FLOP. GemmReport turns ops/s into GFLOP/s and % of peak.
 *
 * <p>Run: {@code ./moe4j bench MoeGemmBench -f 1 -wi 2 -i 3 -w 1s -r 1s -prof gc} (add {@code -p rows=64 -p d=512}
 * to narrow the 27-shape grid).
 *
 * <p>Result (GemmReport, same run as GemmBench's, peak 478 GFLOP/s), % of peak over the 9 (d, h) pairs:
 * up R=16 21-39%, R=64 29-47%, R=256 37-60%; down R=16 15-39%, R=64 24-45%, R=256 37-57%; dW1 R=16 13-42%,
 * R=64 22-57%, R=256 42-60%. Below the 45% goal at R=64: packing op(B) (B^T, a transposing copy of k n
 * elements per call) costs about as much as the 2 R k n FLOP; R = 16 takes the unpacked dot-product path.
 * B/op 0.2-18 (JMH's per-iteration overhead, growing with the op's length), nothing per call.
 *
 * <p>After N slices cut at 16-column vectors with 8 x 32 / 8 x 16 kernels for the narrow panels (commit d618fb7),
 * up/down at R = 64..256, h = 512, measured side by side against the previous kernel in one JMH run (a temporary
 * copy of it behind a second @Param value, not committed; 2026-12-01, shared 2-core Zen 5, JDK 25, {@code -f 1
 * -wi 3..4 -i 3..4 -w 1s -r 1s}), % of the FMA peak of the same run: peak 231 GFLOP/s: up R=64 58% (was 43%) /
 * 57% (52%) at d = 512 / 1024, R=256 70% (62%) / 69% (56%); down R=64 51% (46%) / 56% (57%), R=256 69% (60%) /
 * 65% (71%). Peak 191 GFLOP/s, d = 256 / 512 / 1024: up R=64 72 / 70 / 64% (was 68 / 52 / 52%), R=256 90 / 65 /
 * 72% (77 / 76 / 70%); down R=64 54 / 73 / 67% (44 / 61 / 71%), R=256 81 / 86 / 78% (72 / 75 / 87%). The host's
 * speed drifts by 2x within a run, so single cells swing by +-15%; down R=256 d=1024 was lower than before in all
 * three side-by-side runs (0.89-0.92x), the one shape where the old whole-panel split was already even (11 + 11).
 * What is left: packing B^T is ~20% of a 64-row call on one thread (70% of the one-core peak, 89% with the pack
 * skipped), and 2 threads lose another ~10 points to the per-call hand-off and the shared host.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class MoeGemmBench {
    @Param({"16", "64", "256"})
    public int rows;
    @Param({"256", "512", "1024"})
    public int d;
    @Param({"256", "512", "1024"})
    public int h;

    private Arena arena;
    private MemorySegment x;
    private MemorySegment w1;
    private MemorySegment w2;
    private MemorySegment hid;
    private MemorySegment y;
    private MemorySegment dh;
    private MemorySegment dw1;
    private JavaGemm gemm;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        Random rnd = new Random(2);
        x = GemmBench.random(arena, rnd, (long) rows * d);
        w1 = GemmBench.random(arena, rnd, (long) h * d);
        w2 = GemmBench.random(arena, rnd, (long) d * h);
        hid = GemmBench.random(arena, rnd, (long) rows * h);
        y = GemmBench.random(arena, rnd, (long) rows * d);
        dh = GemmBench.random(arena, rnd, (long) rows * h);
        dw1 = GemmBench.random(arena, rnd, (long) h * d);
        gemm = new JavaGemm(WorkerPool.common());
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    /** x [R, d], W1 [h, d] -> H [R, h] = x W1^T. */
    @Benchmark
    public void up() {
        gemm.sgemm(false, true, rows, h, d, 1f, x, 0, d, w1, 0, d, 0f, hid, 0, h);
    }

    /** H [R, h], W2 [d, h] -> Y [R, d] = H W2^T. */
    @Benchmark
    public void down() {
        gemm.sgemm(false, true, rows, d, h, 1f, hid, 0, h, w2, 0, h, 0f, y, 0, d);
    }

    /** dH [R, h], x [R, d] -> dW1 [h, d] += dH^T x (accumulating, beta = 1, as gradients do). */
    @Benchmark
    public void dW1() {
        gemm.sgemm(true, false, h, d, rows, 1f, dh, 0, h, x, 0, d, 1f, dw1, 0, d);
    }

    public static double flopPerOp(int rows, int d, int h) {
        return 2.0 * rows * d * h;
    }
}
