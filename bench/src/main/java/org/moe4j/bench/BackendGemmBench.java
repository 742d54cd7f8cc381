package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnGemm;
import org.moe4j.nativ.OneDnnMatmul;
import org.moe4j.simd.Convert;
import org.moe4j.simd.DType;
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
 * Question: how do the GEMM backends compare on the same shapes, threads and machine: the Java Vector API kernel,
 * oneDNN's dnnl_sgemm, oneDNN's f32 matmul primitive, and oneDNN's bf16 matmul (bf16 A and B, f32 C)?
 *
 * <p>Hypothesis: dnnl_sgemm reaches ~85-90% of the FP32 FMA peak at 2048^3 (BASELINES: 480-487 GFLOP/s) and
 * leads the Java kernel most on the small-R expert shapes, where its packing is cheaper; bf16 doubles the f32
 * rate on avx512_bf16 (vdpbf16ps does 2 multiply-adds per lane).
 *
 * <p>Shapes ({@code shape} param; d = h = 512 as in the engine's "bench" config):
 * <ul>
 *   <li>{@code sqN}: N x N x N, no transposes.</li>
 *   <li>{@code upR}: an expert's up projection, x [R, d] W1^T [d, h]: m = R, n = h, k = d, B transposed.</li>
 *   <li>{@code dW1_R}: its weight gradient, dW1 [h, d] += dH^T [h, R] x [R, d]: A transposed, k = R, beta = 1.</li>
 * </ul>
 * One op is one GEMM of 2 m n k FLOP; BackendReport turns ops/s into GFLOP/s and % of the FMA peak measured in the
 * same run. For onednn_bf16 the A and B operands are converted to bf16 once, at setup (weights and activations
 * would be stored so), and are not part of the op.
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -cp
 * bench/target/benchmarks.jar org.moe4j.bench.BackendReport -f 1 -wi 2 -i 3 -w 1s -r 1s -p shape=sq1024,sq2048,up64,up256}
 *
 * <p>Result (bench/results/backend-gemm-report.md: 5 rounds on a busy shared machine, same-run FMA peak 46-229
 * instead of 530 GFLOP/s, medians): sq2048 java 31, onednn 103, onednn_matmul 98, onednn_bf16 184 GFLOP/s; up64
 * java 16, onednn 44, onednn_matmul 95, onednn_bf16 174. The hypothesis on bf16 held (~2x f32); the one on
 * dnnl_sgemm for small R did not: the f32 matmul primitive is ~2x dnnl_sgemm at up64. Quiet-machine figures
 * still to be taken.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class BackendGemmBench {
    static final int D = 512;
    static final int H = 512;

    @Param({"java", "onednn", "onednn_matmul", "onednn_bf16"})
    public String backend;
    @Param({"sq256", "sq512", "sq1024", "sq2048", "up64", "up256", "dW1_256"})
    public String shape;
    /** Worker-pool threads for java, OpenMP threads for oneDNN. */
    @Param({"2"})
    public int threads;

    boolean transA;
    boolean transB;
    int m;
    int n;
    int k;
    int lda;
    int ldb;
    float beta;

    private Arena arena;
    private MemorySegment a;
    private MemorySegment b;
    private MemorySegment c;
    private WorkerPool pool;
    private JavaGemm java;
    private OneDnnGemm onednn;
    private OneDnnMatmul matmul;

    /** m, n, k, transposes of a shape name (see the class comment). */
    static int[] dims(String shape) {
        if (shape.startsWith("sq")) {
            int s = Integer.parseInt(shape.substring(2));
            return new int[] {s, s, s, 0, 0};
        }
        if (shape.startsWith("up")) {
            return new int[] {Integer.parseInt(shape.substring(2)), H, D, 0, 1};
        }
        if (shape.startsWith("dW1_")) {
            return new int[] {H, D, Integer.parseInt(shape.substring(4)), 1, 0};
        }
        throw new IllegalArgumentException("shape " + shape + ": expected sqN, upR or dW1_R");
    }

    public static double flopPerOp(String shape) {
        int[] s = dims(shape);
        return 2.0 * s[0] * s[1] * s[2];
    }

    @Setup(Level.Trial)
    public void setUp() {
        int[] s = dims(shape);
        m = s[0];
        n = s[1];
        k = s[2];
        transA = s[3] != 0;
        transB = s[4] != 0;
        lda = transA ? m : k;
        ldb = transB ? k : n;
        beta = shape.startsWith("dW1") ? 1f : 0f;
        arena = Arena.ofShared();
        Random rnd = new Random(3);
        MemorySegment af = GemmBench.random(arena, rnd, (long) m * k);
        MemorySegment bf = GemmBench.random(arena, rnd, (long) k * n);
        c = GemmBench.random(arena, rnd, (long) m * n);
        switch (backend) {
            case "java" -> {
                pool = new WorkerPool(threads);
                java = new JavaGemm(pool);
            }
            case "onednn" -> onednn = new OneDnnGemm(threads);
            case "onednn_matmul", "onednn_bf16" -> matmul = new OneDnnMatmul(threads);
            default -> throw new IllegalArgumentException("backend " + backend);
        }
        if (!backend.equals("java") && !OneDnn.available()) {
            throw new IllegalStateException("oneDNN unavailable: " + OneDnn.reason());
        }
        if (backend.equals("onednn_bf16")) {
            a = arena.allocate(2L * m * k, 64);
            b = arena.allocate(2L * k * n, 64);
            Convert.f32ToBf16(af, 0, a, 0, (long) m * k);
            Convert.f32ToBf16(bf, 0, b, 0, (long) k * n);
        } else {
            a = af;
            b = bf;
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        if (matmul != null) {
            matmul.close();
        }
        if (pool != null) {
            pool.close();
        }
        arena.close();
    }

    @Benchmark
    public void gemm() {
        switch (backend) {
            case "java" -> java.sgemm(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, beta, c, 0, n);
            case "onednn" -> onednn.sgemm(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, beta, c, 0, n);
            case "onednn_matmul" -> matmul.sgemm(transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, beta, c, 0, n);
            default -> matmul.matmul(DType.BF16, transA, transB, m, n, k, 1f, a, 0, lda, b, 0, ldb, beta, c, 0, n);
        }
    }
}
