package org.moe4j.simd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Runs every kernel once on fixed pseudo-random inputs and returns a 64-bit hash of each output's bits, by kernel
 * name. {@link ColdWarmBitsTest} compares these hashes between an interpreter-only JVM, a C1-only JVM, the first
 * call in its own JVM and a call after C2 has compiled the kernels, and between pools of 1 and 3 threads. Shapes
 * are odd on purpose (tails shorter than a vector at every width) and small (the interpreter runs the Vector API
 * lane by lane). {@link #main} prints {@code name hash} lines for one run on {@code args[0]} threads, after
 * {@code args[1]} light and {@code args[2]} heavy repeats when given (see {@link #run(WorkerPool, int, int)}).
 */
public final class KernelBits {
    private KernelBits() {
    }

    public static void main(String[] args) {
        int threads = Integer.parseInt(args[0]);
        Map<String, Long> h;
        try (WorkerPool pool = new WorkerPool(threads)) {
            if (args.length == 3) {
                run(pool, Integer.parseInt(args[1]), Integer.parseInt(args[2]));
            }
            h = run(pool);
        }
        for (Map.Entry<String, Long> e : h.entrySet()) {
            System.out.println(e.getKey() + " " + Long.toHexString(e.getValue()));
        }
    }

    /** Every kernel once. */
    static Map<String, Long> run(WorkerPool pool) {
        return run(pool, 1, 1);
    }

    /**
     * Every kernel, each call repeated {@code lightReps} times (element-wise kernels) or {@code heavyReps} times
     * (attention, GEMM) on the same inputs, so that a warm-up reaches C2 for the cheap kernels too without running
     * the expensive ones as often. Inputs a kernel updates in place are restored before each repeat.
     */
    static Map<String, Long> run(WorkerPool pool, int lightReps, int heavyReps) {
        Map<String, Long> out = new LinkedHashMap<>();
        try (Arena arena = Arena.ofShared()) {
            SplittableRandom rnd = new SplittableRandom(42);
            int rows = 7;
            int n = 203; // 12 x 16 + 11: a tail at 4, 8 and 16 lanes
            MemorySegment x = gaussian(arena, rnd, rows * n, 4.0);
            MemorySegment y = arena.allocate(4L * rows * n, 64);
            MemorySegment lse = arena.allocate(4L * rows, 64);
            MemorySegment mask = arena.allocate(8L * rows * 4, 8);
            for (int i = 0; i < rows * 4; i++) {
                mask.setAtIndex(ValueLayout.JAVA_LONG, i, rnd.nextLong());
            }
            MemorySegment dy = gaussian(arena, rnd, rows * n, 1.0);
            MemorySegment dx = arena.allocate(4L * rows * n, 64);
            MemorySegment a = gaussian(arena, rnd, rows * n, 3.0);
            MemorySegment b = gaussian(arena, rnd, rows * n, 1.0);
            MemorySegment da = arena.allocate(4L * rows * n, 64);
            MemorySegment db = arena.allocate(4L * rows * n, 64);
            MemorySegment targets = arena.allocate(4L * rows, 4);
            for (int r = 0; r < rows; r++) {
                targets.setAtIndex(ValueLayout.JAVA_INT, r, r == 3 ? -100 : rnd.nextInt(n));
            }
            MemorySegment loss = arena.allocate(4L * rows, 4);
            MemorySegment w = gaussian(arena, rnd, n, 1.0);
            MemorySegment rstd = arena.allocate(4L * rows, 4);
            MemorySegment dw = arena.allocate(4L * n, 64);
            int len = 5003;
            MemorySegment p0 = gaussian(arena, rnd, len, 1.0);
            MemorySegment g = gaussian(arena, rnd, len, 1e-2);
            MemorySegment m0 = gaussian(arena, rnd, len, 1e-3);
            MemorySegment p = arena.allocate(4L * len, 64);
            MemorySegment m1 = arena.allocate(4L * len, 64);
            MemorySegment m2 = arena.allocate(4L * len, 64);
            int ropeN = 2 * 9 * 3 * 20;
            MemorySegment rope0 = gaussian(arena, rnd, ropeN, 1.0);
            Tensor rq = Tensor.allocate(arena, 2 * 9, 3 * 20);
            Rope rope = new Rope(16, 20, 10000.0);
            int vocab = 11;
            int[] ids = {3, 0, 10, 3, 7, 7, 1};
            MemorySegment table = gaussian(arena, rnd, vocab * n, 1.0);
            MemorySegment emb = arena.allocate(4L * ids.length * n, 64);
            MemorySegment dtable = arena.allocate(4L * vocab * n, 64);
            MemorySegment idx = arena.allocate(4L * rows * 5, 4);
            MemorySegment half = arena.allocate(2L * rows * n, 2);
            for (int rep = 0; rep < lightReps; rep++) {
                Softmax.forward(x, 0, n, y, 0, n, n, null, 0, 0, lse, 0, 0, rows);
                out.put("softmax", hash(y, rows * n) ^ hash(lse, rows));
                Softmax.forward(x, 0, n, y, 0, n, n, mask, 0, 4, lse, 0, 0, rows);
                out.put("softmax-masked", hash(y, rows * n) ^ hash(lse, rows));
                Softmax.backward(y, 0, n, dy, 0, n, dx, 0, n, n, 0, rows);
                out.put("softmax-backward", hash(dx, rows * n));

                SwiGlu.forward(a, 0, n, b, 0, n, y, 0, n, n, 0, rows);
                out.put("swiglu", hash(y, rows * n));
                SwiGlu.backward(dy, 0, n, a, 0, n, b, 0, n, da, 0, n, db, 0, n, n, 0, rows);
                out.put("swiglu-backward", hash(da, rows * n) ^ Long.rotateLeft(hash(db, rows * n), 1));

                double ce = CrossEntropy.forward(x, 0, targets, 0, -100, lse, 0, loss, 0, n, 0, rows);
                CrossEntropy.backward(x, 0, targets, 0, -100, lse, 0, 0.25f, 1e-3f, dx, 0, n, 0, rows);
                out.put("cross-entropy", hash(loss, rows) ^ hash(dx, rows * n) ^ Double.doubleToLongBits(ce));

                RmsNorm.forward(x, 0, w, 0, y, 0, rstd, 0, n, 1e-6f, 0, rows);
                dw.fill((byte) 0);
                RmsNorm.backward(dy, 0, x, 0, w, 0, rstd, 0, dx, 0, false, dw, 0, n, 0, rows);
                out.put("rmsnorm", hash(y, rows * n) ^ hash(rstd, rows) ^ hash(dx, rows * n) ^ hash(dw, n));

                MemorySegment.copy(p0, 0, p, 0, 4L * len);
                MemorySegment.copy(m0, 0, m1, 0, 4L * len);
                m2.fill((byte) 0);
                double ss = AdamW.sumSquares(g, 0, len);
                AdamW.step(p, 0, g, 0, m1, 0, m2, 0, len, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f, 0.7f);
                out.put("adamw", hash(p, len) ^ hash(m1, len) ^ hash(m2, len) ^ Double.doubleToLongBits(ss));
                out.put("vector-ops", Float.floatToIntBits(VectorOps.dot(p0, 0, g, 1, len - 1)) * 31L
                        + Float.floatToIntBits(VectorOps.sumSquares(p0, 3, len - 3)));

                MemorySegment.copy(rope0, 0, rq.segment(), 0, 4L * ropeN);
                rope.forward(rq, 3, 9);
                out.put("rope", hash(rq.segment(), ropeN));

                Embedding.forward(table, 0, vocab, ids, emb, 0, n, 0, ids.length);
                dtable.fill((byte) 0);
                Embedding.backward(dy, 0, ids, dtable, 0, vocab, n, 0, ids.length, 0, n);
                out.put("embedding", hash(emb, ids.length * n) ^ hash(dtable, vocab * n));

                TopK.select(x, 0, n, n, 5, null, 0, 0, idx, 0, 5, y, 0, 5, 0, rows);
                out.put("top-k", hashInts(idx, rows * 5) ^ hash(y, rows * 5));

                Convert.f32ToBf16(x, 0, half, 0, rows * n);
                Convert.bf16ToF32(half, 0, y, 0, rows * n);
                long hc = hash(y, rows * n);
                Convert.f32ToF16(x, 0, half, 0, rows * n);
                Convert.f16ToF32(half, 0, y, 0, rows * n);
                out.put("convert", hc ^ hash(y, rows * n));
            }
            attention(arena, rnd, pool, out, heavyReps);
            gemm(arena, rnd, pool, out, heavyReps);
        }
        return out;
    }

    private static void attention(Arena arena, SplittableRandom rnd, WorkerPool pool, Map<String, Long> out,
                                  int reps) {
        int batch = 2, seq = 23, heads = 4, kvHeads = 2, dh = 20;
        int rows = batch * seq;
        Tensor q = Tensor.of(gaussian(arena, rnd, rows * heads * dh, 1.0), DType.F32, rows, heads * dh);
        Tensor k = Tensor.of(gaussian(arena, rnd, rows * kvHeads * dh, 1.0), DType.F32, rows, kvHeads * dh);
        Tensor v = Tensor.of(gaussian(arena, rnd, rows * kvHeads * dh, 1.0), DType.F32, rows, kvHeads * dh);
        Tensor o = Tensor.allocate(arena, rows, heads * dh);
        Tensor lse = Tensor.allocate(arena, rows, heads);
        Tensor dOut = Tensor.of(gaussian(arena, rnd, rows * heads * dh, 1.0), DType.F32, rows, heads * dh);
        Tensor dq = Tensor.allocate(arena, rows, heads * dh);
        Tensor dk = Tensor.allocate(arena, rows, kvHeads * dh);
        Tensor dv = Tensor.allocate(arena, rows, kvHeads * dh);
        MemorySegment doc = arena.allocate(4L * rows, 4);
        for (int r = 0; r < rows; r++) {
            doc.setAtIndex(ValueLayout.JAVA_INT, r, (r % seq) / 9);
        }
        Attention att = new Attention(seq, heads, kvHeads, dh, 3);
        for (int rep = 0; rep < reps; rep++) {
            att.forward(q, k, v, doc, o, lse, batch, seq, pool);
            att.backward(q, k, v, doc, o, lse, dOut, dq, dk, dv, batch, seq, pool);
        }
        out.put("attention", hash(o.segment(), rows * heads * dh) ^ hash(lse.segment(), rows * heads));
        out.put("attention-backward", hash(dq.segment(), rows * heads * dh)
                ^ Long.rotateLeft(hash(dk.segment(), rows * kvHeads * dh), 1)
                ^ Long.rotateLeft(hash(dv.segment(), rows * kvHeads * dh), 2));
    }

    private static void gemm(Arena arena, SplittableRandom rnd, WorkerPool pool, Map<String, Long> out, int reps) {
        JavaGemm gemm = new JavaGemm(pool);
        // {m, n, k, B transposed}: each above JavaGemm's parallel threshold (m n k >= 64^3). The packed path split
        // over threads by N (m small; two K blocks), by M (m >= 192 per thread at 3 threads), and the skinny dot
        // path (m <= 32 with B^T); N, M and K edges at every width
        int[][] shapes = {{13, 101, 261, 0}, {13, 101, 261, 1}, {580, 23, 20, 0}, {20, 77, 203, 1}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            boolean tb = s[3] == 1;
            MemorySegment a = gaussian(arena, rnd, m * k, 1.0);
            MemorySegment b = gaussian(arena, rnd, k * n, 1.0);
            MemorySegment c0 = gaussian(arena, rnd, m * n, 1.0);
            MemorySegment c = arena.allocate(4L * m * n, 64);
            for (int rep = 0; rep < reps; rep++) {
                MemorySegment.copy(c0, 0, c, 0, 4L * m * n);
                gemm.sgemm(false, tb, m, n, k, 0.5f, a, 0, k, b, 0, tb ? k : n, 0.25f, c, 0, n);
            }
            out.put("gemm-" + m + "x" + n + "x" + k + (tb ? "-bt" : ""), hash(c, m * n));
        }
    }

    static MemorySegment gaussian(Arena arena, SplittableRandom rnd, int n, double scale) {
        MemorySegment s = arena.allocate(4L * n, 64);
        for (int i = 0; i < n; i++) {
            // sum of uniforms: near-gaussian without Math.log/Math.sqrt, so the inputs need no care themselves
            double u = rnd.nextDouble() + rnd.nextDouble() + rnd.nextDouble() - 1.5;
            s.setAtIndex(Tensor.FLOAT, i, (float) (u * 2 * scale));
        }
        return s;
    }

    static long hash(MemorySegment s, long n) {
        long h = 0x9E3779B97F4A7C15L;
        for (long i = 0; i < n; i++) {
            h = (h ^ Float.floatToRawIntBits(s.getAtIndex(Tensor.FLOAT, i))) * 0x100000001B3L;
        }
        return h;
    }

    static long hashInts(MemorySegment s, long n) {
        long h = 0x9E3779B97F4A7C15L;
        for (long i = 0; i < n; i++) {
            h = (h ^ s.getAtIndex(ValueLayout.JAVA_INT, i)) * 0x100000001B3L;
        }
        return h;
    }
}
