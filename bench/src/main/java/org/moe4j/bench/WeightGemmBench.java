package org.moe4j.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WeightGemm;
import org.moe4j.simd.WorkerPool;
import org.openjdk.jmh.annotations.AuxCounters;
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
 * Question: does the decode-time linear layer ({@link WeightGemm}, a few activation rows times a row-major weight
 * [N, K]) run at the memory-bandwidth bound, i.e. read the weights at the rate a plain streaming sum reads memory?
 *
 * <p>Hypothesis: M = 1 reads the weights at >= 85-90% of the streaming-read bandwidth measured in the same run, for
 * F32 and BF16 (the bf16 widening is a shift in registers, free next to the memory traffic); M = 4 and 16 stay
 * close (each weight block is read from memory once and reused from L1/L2 for the other activation rows).
 *
 * <p>Shapes: {@code expert} N = 8192 (2h, gate and up of an expert with h = 4096), K = 2048; {@code head} an LM head
 * N = 16384 (vocabulary), K = 1024 (16 Mi weight elements each: 64 MB F32, 32 MB BF16); {@code decode} the bench
 * config's gate and up, N = 1024, K = 512 (2 MB F32, 1 MB BF16: the size of the products a decoded token runs). Each call uses the next
 * of several copies of the weight, 256 MB in all, so the weights come from memory and not from the L3 (300 MB on the
 * Sapphire Rapids VM this was written on) — the same footprint as the 256 MB of {@link #readBandwidth}.
 *
 * <p>Reading the table: the {@code gbs} column (a JMH aux counter, "ops/s" = GB/s) is the rate at which weight
 * bytes (or, for readBandwidth, segment bytes) were read; kernel ÷ readBandwidth is the fraction of the bound.
 * Both use the common pool (one thread per core; 2 on the development VM).
 *
 * <p>Run: {@code ./moe4j bench WeightGemmBench -f 1 -wi 2 -i 3 -w 1s -r 1s} (add {@code -prof gc}: ~0 B/op).
 * Give the JIT time: until C2 has compiled the 4 x 4 kernel (3-5 s on a busy host) it runs as C1 code, which boxes
 * every vector, so short warmups on a loaded machine show MB/op and a tenth of the speed.
 *
 * <p>Result (2026-12-07, 2-vCPU Sapphire Rapids KVM guest, JDK 25, shared with 4 other sessions: load average
 * 17-23 during the runs, so every figure below is CPU-starved and the errors are as large as the means):
 * {@code -f 1 -wi 4 -i 3 -w 1s -r 1s -p m=1 -prof gc}: readBandwidth 3.8 GB/s; f32 m=1 expert 3.5 GB/s (0.90),
 * head 3.4 (0.88); bf16 m=1 expert 2.3 (0.59), head 1.8 (0.47); 116-148 B/op (readBandwidth: 513 B/op — JMH and
 * the pool's park/unpark under contention; single-threaded runs of the kernel allocate 0 B/call). Under CPU
 * starvation the ratio tends to the ratio of per-CPU-second speeds instead of the memory bound: measured
 * single-threaded per CPU second on L2-resident weights, the streaming sum reads ~130 GB/s, the F32 kernel ~95,
 * the BF16 kernel ~45 (the widening costs two 512-bit ALU uops per 16 weights on the two vector ports). On an idle
 * host with ~16 GB/s of read bandwidth per core both kernels have 3x / 6x headroom, so M = 1 should sit at the
 * bound; this run could not show it. To redo on a quiet machine.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
public class WeightGemmBench {
    /** Footprint of the weight copies and of the streaming-read segment. */
    static final long FOOTPRINT = 256L << 20;
    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

    /** Weight bytes read, reported per second (GB/s). */
    @State(Scope.Thread)
    @AuxCounters(AuxCounters.Type.OPERATIONS)
    public static class Bytes {
        public double gbs;

        @Setup(Level.Iteration)
        public void reset() {
            gbs = 0;
        }
    }

    @State(Scope.Benchmark)
    public static class Weights {
        @Param({"1", "4", "16"})
        public int m;
        @Param({"expert", "head", "decode"})
        public String shape;
        @Param({"f32", "bf16"})
        public String dtype;

        int n;
        int k;
        boolean bf16;
        Arena arena;
        MemorySegment[] copies;
        MemorySegment x;
        MemorySegment out;
        WeightGemm gemm;
        int next;
        double gbPerCall;

        @Setup(Level.Trial)
        public void setUp() {
            switch (shape) {
                case "expert" -> { n = 8192; k = 2048; }
                case "head" -> { n = 16384; k = 1024; }
                case "decode" -> { n = 1024; k = 512; }
                default -> throw new IllegalArgumentException("shape: expert, head or decode, got " + shape);
            }
            bf16 = "bf16".equals(dtype);
            long elems = (long) n * k;
            long bytes = elems * (bf16 ? 2 : 4);
            arena = Arena.ofShared();
            Random rnd = new Random(7);
            MemorySegment w32 = GemmBench.random(arena, rnd, elems);
            copies = new MemorySegment[(int) Math.max(1, FOOTPRINT / bytes)];
            for (int c = 0; c < copies.length; c++) {
                copies[c] = arena.allocate(bytes, 64);
                if (bf16) {
                    WeightGemm.toBf16(w32, 0, copies[c], 0, elems);
                } else {
                    MemorySegment.copy(w32, 0, copies[c], 0, bytes);
                }
            }
            x = GemmBench.random(arena, rnd, (long) m * k);
            out = arena.allocate((long) m * n * 4, 64);
            WorkerPool pool = WorkerPool.common();
            gemm = new WeightGemm(pool, new JavaGemm(pool), k);
            gbPerCall = bytes / 1e9;
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            arena.close();
        }
    }

    /** out [m, n] = x [m, k] · W [n, k]ᵀ with the next weight copy. */
    @Benchmark
    public void weightGemm(Weights s, Bytes b) {
        MemorySegment w = s.copies[s.next];
        s.next = s.next + 1 == s.copies.length ? 0 : s.next + 1;
        if (s.bf16) {
            s.gemm.bf16(s.m, s.n, s.k, s.x, 0, s.k, w, 0, s.k, 0f, s.out, 0, s.n);
        } else {
            s.gemm.f32(s.m, s.n, s.k, s.x, 0, s.k, w, 0, s.k, 0f, s.out, 0, s.n);
        }
        b.gbs += s.gbPerCall;
    }

    @State(Scope.Benchmark)
    public static class Stream {
        Arena arena;
        MemorySegment data;
        WorkerPool pool;
        final SumTask task = new SumTask();

        @Setup(Level.Trial)
        public void setUp() {
            arena = Arena.ofShared();
            data = arena.allocate(FOOTPRINT, 64);
            for (long i = 0; i < FOOTPRINT / 4; i++) {
                data.setAtIndex(Tensor.FLOAT, i, (float) (i & 1023));
            }
            pool = WorkerPool.common();
            task.data = data;
            task.partial = new float[pool.threads()];
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            arena.close();
        }
    }

    /** Σ over one slice of the segment per thread, four vector accumulators (the read-bandwidth yardstick). */
    static final class SumTask implements WorkerPool.RangeTask {
        MemorySegment data;
        float[] partial;

        @Override
        public void run(int start, int end, int worker) {
            int l = F.length();
            long blockFloats = 4L * l;
            FloatVector s0 = FloatVector.zero(F);
            FloatVector s1 = FloatVector.zero(F);
            FloatVector s2 = FloatVector.zero(F);
            FloatVector s3 = FloatVector.zero(F);
            ByteOrder bo = ByteOrder.nativeOrder();
            for (long blk = start; blk < end; blk++) {
                long b = blk * blockFloats * 4;
                s0 = s0.add(FloatVector.fromMemorySegment(F, data, b, bo));
                s1 = s1.add(FloatVector.fromMemorySegment(F, data, b + 4L * l, bo));
                s2 = s2.add(FloatVector.fromMemorySegment(F, data, b + 8L * l, bo));
                s3 = s3.add(FloatVector.fromMemorySegment(F, data, b + 12L * l, bo));
            }
            partial[worker] = s0.add(s1).add(s2.add(s3)).reduceLanes(jdk.incubator.vector.VectorOperators.ADD);
        }
    }

    /** Streaming read of the whole 256 MB segment by the pool's threads. */
    @Benchmark
    public float readBandwidth(Stream s, Bytes b) {
        int blocks = (int) (FOOTPRINT / (4L * F.length() * 4));
        s.pool.parallelFor(blocks, s.task);
        b.gbs += FOOTPRINT / 1e9;
        float t = 0;
        for (float p : s.task.partial) {
            t += p;
        }
        return t;
    }
}
