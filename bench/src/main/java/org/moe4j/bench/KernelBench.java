package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.moe4j.simd.AdamW;
import org.moe4j.simd.Convert;
import org.moe4j.simd.CrossEntropy;
import org.moe4j.simd.Embedding;
import org.moe4j.simd.RmsNorm;
import org.moe4j.simd.Softmax;
import org.moe4j.simd.SwiGlu;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.TopK;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Question: how long does each non-GEMM kernel take on one thread at model-typical shapes, and does any of them
 * allocate on the Java heap?
 *
 * <p>Hypothesis: every kernel is memory-bound or exp-bound, a few hundred microseconds at most per call, and
 * allocates 0 B/op (no {@code Vector} escapes; checked with {@code -prof gc}).
 *
 * <p>Shapes: T = 2048 rows, d = 512 (RMSNorm, embedding from V = 8192), h = 1024 (SwiGLU), router logits
 * [2048, 32] with k = 4 (softmax, top-k), cross-entropy 512 rows x V = 8192, AdamW and the conversions over
 * 2048 x 512 = 1M elements. One call = the whole shape, on the calling thread (rows [0, T)).
 *
 * <p>Run: {@code ./moe4j bench KernelBench -f 1 -wi 2 -i 3 -w 1s -r 1s -prof gc}
 *
 * <p>Smoke result (2-core Zen 5 AVX-512, JDK 25, machine shared with other builds, so +-20%), us/op:
 * rmsNormForward 316, rmsNormBackward 565, swiGluForward 1133, swiGluBackward 1697, softmaxForward 73,
 * softmaxBackward 29, topK 403, crossEntropyForward 1912, crossEntropyBackward 1726, embeddingForward 319,
 * embeddingBackward 366, adamWStep 584, gradSumSquares 124, bf16ToF32 217, f32ToBf16 198, f16ToF32 225.
 * gc.alloc.rate.norm 0.2-14 B/op everywhere, growing with the op's length (JMH's per-iteration overhead);
 * a boxed Vector would show as ~288 B per vector step (147 KB/op on an 8192-wide softmax before the fix).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class KernelBench {
    static final int T = 2048;
    static final int D = 512;
    static final int H = 1024;
    static final int E = 32;
    static final int K = 4;
    static final int CE_ROWS = 512;
    static final int V = 8192;
    static final long N = (long) T * D;

    private Arena arena;
    private MemorySegment x;
    private MemorySegment w;
    private MemorySegment y;
    private MemorySegment rstd;
    private MemorySegment dy;
    private MemorySegment dx;
    private MemorySegment dw;
    private MemorySegment a;
    private MemorySegment b;
    private MemorySegment out;
    private MemorySegment da;
    private MemorySegment db;
    private MemorySegment logitsE;
    private MemorySegment probsE;
    private MemorySegment dprobsE;
    private MemorySegment topIdx;
    private MemorySegment topVal;
    private MemorySegment logitsV;
    private MemorySegment dlogitsV;
    private MemorySegment targets;
    private MemorySegment lse;
    private MemorySegment loss;
    private MemorySegment table;
    private MemorySegment dtable;
    private MemorySegment ids;
    private MemorySegment m;
    private MemorySegment v;
    private MemorySegment half;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        Random rnd = new Random(42);
        x = gaussian(rnd, N);
        w = gaussian(rnd, D);
        y = gaussian(rnd, N);
        rstd = gaussian(rnd, T);
        dy = gaussian(rnd, N);
        dx = gaussian(rnd, N);
        dw = gaussian(rnd, D);
        a = gaussian(rnd, (long) T * H);
        b = gaussian(rnd, (long) T * H);
        out = gaussian(rnd, (long) T * H);
        da = gaussian(rnd, (long) T * H);
        db = gaussian(rnd, (long) T * H);
        logitsE = gaussian(rnd, (long) T * E);
        probsE = gaussian(rnd, (long) T * E);
        dprobsE = gaussian(rnd, (long) T * E);
        topIdx = arena.allocate(4L * T * K, 64);
        topVal = arena.allocate(4L * T * K, 64);
        logitsV = gaussian(rnd, (long) CE_ROWS * V);
        dlogitsV = gaussian(rnd, (long) CE_ROWS * V);
        targets = arena.allocate(4L * T, 64);
        ids = arena.allocate(4L * T, 64);
        for (int i = 0; i < T; i++) {
            targets.setAtIndex(ValueLayout.JAVA_INT, i, rnd.nextInt(V));
            ids.setAtIndex(ValueLayout.JAVA_INT, i, rnd.nextInt(V));
        }
        lse = gaussian(rnd, T);
        loss = gaussian(rnd, T);
        table = gaussian(rnd, (long) V * D);
        dtable = gaussian(rnd, (long) V * D);
        m = gaussian(rnd, N);
        v = arena.allocate(4L * N, 64); // second moments start at 0, stay >= 0
        half = arena.allocate(2L * N, 64);
        Softmax.forward(logitsE, 0, E, probsE, 0, E, E, 0, T);
        Convert.f32ToBf16(x, 0, half, 0, N);
    }

    private MemorySegment gaussian(Random rnd, long n) {
        MemorySegment s = arena.allocate(4 * n, 64);
        for (long i = 0; i < n; i++) {
            s.setAtIndex(Tensor.FLOAT, i, (float) rnd.nextGaussian());
        }
        return s;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }

    @Benchmark
    public void rmsNormForward() {
        RmsNorm.forward(x, 0, w, 0, y, 0, rstd, 0, D, 1e-6f, 0, T);
    }

    @Benchmark
    public void rmsNormBackward() {
        RmsNorm.backward(dy, 0, x, 0, w, 0, rstd, 0, dx, 0, false, dw, 0, D, 0, T);
    }

    @Benchmark
    public void swiGluForward() {
        SwiGlu.forward(a, 0, H, b, 0, H, out, 0, H, H, 0, T);
    }

    @Benchmark
    public void swiGluBackward() {
        SwiGlu.backward(out, 0, H, a, 0, H, b, 0, H, da, 0, H, db, 0, H, H, 0, T);
    }

    @Benchmark
    public void softmaxForward() {
        Softmax.forward(logitsE, 0, E, probsE, 0, E, E, 0, T);
    }

    @Benchmark
    public void softmaxBackward() {
        Softmax.backward(probsE, 0, E, logitsE, 0, E, dprobsE, 0, E, E, 0, T);
    }

    @Benchmark
    public int topK() {
        return TopK.select(logitsE, 0, E, E, K, null, 0, 0, topIdx, 0, K, topVal, 0, K, 0, T);
    }

    @Benchmark
    public double crossEntropyForward() {
        return CrossEntropy.forward(logitsV, 0, targets, 0, -1, lse, 0, loss, 0, V, 0, CE_ROWS);
    }

    @Benchmark
    public void crossEntropyBackward() {
        CrossEntropy.backward(logitsV, 0, targets, 0, -1, lse, 0, 1f / CE_ROWS, 1e-5f, dlogitsV, 0, V, 0, CE_ROWS);
    }

    @Benchmark
    public void embeddingForward() {
        Embedding.forward(table, 0, V, ids, 0, y, 0, D, 0, T);
    }

    @Benchmark
    public void embeddingBackward() {
        Embedding.backward(dy, 0, ids, 0, dtable, 0, V, D, 0, T, 0, D);
    }

    @Benchmark
    public void adamWStep() {
        AdamW.step(x, 0, dy, 0, m, 0, v, 0, N, 1e-9f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 0.5f, 1f);
    }

    @Benchmark
    public double gradSumSquares() {
        return AdamW.sumSquares(dy, 0, N);
    }

    @Benchmark
    public void bf16ToF32() {
        Convert.bf16ToF32(half, 0, y, 0, N);
    }

    @Benchmark
    public void f32ToBf16() {
        Convert.f32ToBf16(x, 0, half, 0, N);
    }

    @Benchmark
    public void f16ToF32() {
        Convert.f16ToF32(half, 0, y, 0, N);
    }
}
