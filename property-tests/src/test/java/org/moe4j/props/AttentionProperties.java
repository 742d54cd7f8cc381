package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.Moe4jException;
import org.moe4j.reference.RefAttention;
import org.moe4j.simd.Attention;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * {@link Attention} against {@link RefAttention}, and the twin's gradients against central finite differences.
 *
 * <p>Inputs uniform in [-a, a] with a in {1, 2.5} (the larger gives peaked softmaxes). Tolerances, float32 against
 * float64: out within 4e-6 + 1e-5 |ref|, lse within 1e-5 + 2e-6 |ref|; dq, dk, dv within 1e-5 * (1 + max |ref|)
 * of the whole gradient (a sum over up to T*H/Hkv terms of float products). Observed worst cases over the suite's
 * tries: about 1.2e-6 absolute on out, 2.4e-6 on lse, 1.8e-6 on the gradients (so the bounds leave ~5-10x room).
 * Finite differences: step 1e-5 in double, within 1e-6 * (1 + |analytic|).
 *
 * <p>One Attention object per (H, Hkv, Dh) is reused across tries, with a three-thread pool and three scratch
 * sets, so stale scratch from an earlier, longer call would show up here.
 */
class AttentionProperties {
    private static final int[] HEAD_DIMS = {8, 16, 24, 32, 64, 80, 128};
    private static final int MAX_T = 200;
    private static final WorkerPool POOL = new WorkerPool(3);
    private static final Map<String, Attention> CACHE = new HashMap<>();

    private static synchronized Attention attention(int heads, int kvHeads, int dh) {
        return CACHE.computeIfAbsent(heads + "/" + kvHeads + "/" + dh, key -> new Attention(MAX_T, heads, kvHeads, dh, 3));
    }

    /** A random problem: shapes, inputs and (maybe) EOS-style document ids. */
    record Case(int batch, int seqLen, int heads, int kvHeads, int dh, float[] q, float[] k, float[] v, float[] dOut,
                int[] doc) {
        static Case random(long seed, int batch, int seqLen, int heads, int kvDivisorIndex, int dh, int docMode) {
            Random rnd = new Random(seed);
            int kvHeads = divisors(heads)[kvDivisorIndex % divisors(heads).length];
            float a = rnd.nextBoolean() ? 1f : 2.5f;
            int rows = batch * seqLen;
            return new Case(batch, seqLen, heads, kvHeads, dh,
                    uniform(rnd, rows * heads * dh, a), uniform(rnd, rows * kvHeads * dh, a),
                    uniform(rnd, rows * kvHeads * dh, 1f), uniform(rnd, rows * heads * dh, 1f),
                    docIds(rnd, batch, seqLen, docMode));
        }

        RefAttention.Forward refForward() {
            return RefAttention.forward(d(q), d(k), d(v), doc, batch, seqLen, heads, kvHeads, dh);
        }

        RefAttention.Grads refBackward() {
            return RefAttention.backward(d(q), d(k), d(v), doc, d(dOut), batch, seqLen, heads, kvHeads, dh);
        }
    }

    @Property(tries = 120)
    void forwardMatchesTwin(@ForAll @IntRange(min = 1, max = 3) int batch,
                            @ForAll @IntRange(min = 1, max = 70) int seqLen,
                            @ForAll @IntRange(min = 1, max = 4) int heads,
                            @ForAll @IntRange(min = 0, max = 2) int kvIndex,
                            @ForAll @IntRange(min = 0, max = 6) int dhIndex,
                            @ForAll @IntRange(min = 0, max = 3) int docMode,
                            @ForAll boolean usePool,
                            @ForAll long seed) {
        Case c = Case.random(seed, batch, seqLen, heads, kvIndex, HEAD_DIMS[dhIndex], docMode);
        checkForward(c, usePool);
    }

    @Property(tries = 80)
    void backwardMatchesTwin(@ForAll @IntRange(min = 1, max = 3) int batch,
                             @ForAll @IntRange(min = 1, max = 70) int seqLen,
                             @ForAll @IntRange(min = 1, max = 4) int heads,
                             @ForAll @IntRange(min = 0, max = 2) int kvIndex,
                             @ForAll @IntRange(min = 0, max = 6) int dhIndex,
                             @ForAll @IntRange(min = 0, max = 3) int docMode,
                             @ForAll boolean usePool,
                             @ForAll long seed) {
        Case c = Case.random(seed, batch, seqLen, heads, kvIndex, HEAD_DIMS[dhIndex], docMode);
        checkBackward(c, usePool);
    }

    /** Sequences longer than one query tile (64) and one forward key tile (128): the online rescaling path. */
    @Property(tries = 15)
    void longSequencesMatchTwin(@ForAll @IntRange(min = 1, max = 2) int batch,
                                @ForAll @IntRange(min = 65, max = MAX_T) int seqLen,
                                @ForAll @IntRange(min = 1, max = 2) int heads,
                                @ForAll @IntRange(min = 0, max = 1) int kvIndex,
                                @ForAll @IntRange(min = 0, max = 6) int dhIndex,
                                @ForAll @IntRange(min = 0, max = 3) int docMode,
                                @ForAll boolean usePool,
                                @ForAll long seed) {
        Case c = Case.random(seed, batch, seqLen, heads, kvIndex, HEAD_DIMS[dhIndex], docMode);
        checkForward(c, usePool);
        checkBackward(c, !usePool);
    }

    @Example
    void longSequencesWithDocumentsSpanSeveralTiles() {
        for (int docMode = 0; docMode < 4; docMode++) {
            Case c = Case.random(42 + docMode, 2, 197, 4, 1, 24, docMode);
            checkForward(c, true);
            checkBackward(c, docMode % 2 == 0);
        }
    }

    @Property(tries = 25)
    void twinGradientsMatchFiniteDifferences(@ForAll @IntRange(min = 1, max = 2) int batch,
                                             @ForAll @IntRange(min = 1, max = 9) int seqLen,
                                             @ForAll @IntRange(min = 1, max = 4) int heads,
                                             @ForAll @IntRange(min = 0, max = 2) int kvIndex,
                                             @ForAll @IntRange(min = 0, max = 1) int dhIndex,
                                             @ForAll @IntRange(min = 0, max = 3) int docMode,
                                             @ForAll long seed) {
        Case c = Case.random(seed, batch, seqLen, heads, kvIndex, HEAD_DIMS[dhIndex], docMode);
        double[] q = d(c.q), k = d(c.k), v = d(c.v), w = d(c.dOut);
        RefAttention.Grads g = c.refBackward();
        Random rnd = new Random(seed ^ 0x5DEECE66DL);
        double[][] inputs = {q, k, v};
        double[][] grads = {g.dq(), g.dk(), g.dv()};
        String[] names = {"dq", "dk", "dv"};
        for (int which = 0; which < 3; which++) {
            double[] x = inputs[which];
            for (int n = 0; n < 6; n++) {
                int i = rnd.nextInt(x.length);
                double h = 1e-5;
                double keep = x[i];
                x[i] = keep + h;
                double up = RefAttention.loss(q, k, v, c.doc, w, c.batch, c.seqLen, c.heads, c.kvHeads, c.dh);
                x[i] = keep - h;
                double down = RefAttention.loss(q, k, v, c.doc, w, c.batch, c.seqLen, c.heads, c.kvHeads, c.dh);
                x[i] = keep;
                double fd = (up - down) / (2 * h);
                double an = grads[which][i];
                assertEquals(fd, an, 1e-6 * (1 + Math.abs(an)), names[which] + "[" + i + "]");
            }
        }
    }

    @Example
    void singleTokenAttendsItself() {
        // T = 1: out = v, lse = q.k / sqrt(Dh); the doc mask changes nothing
        Case c = Case.random(7, 3, 1, 4, 1, 16, 2);
        try (Arena arena = Arena.ofShared()) {
            Buffers b = new Buffers(arena, c);
            attention(4, c.kvHeads, 16).forward(b.q, b.k, b.v, b.doc, b.out, b.lse, 3, 1, POOL);
            float[] out = b.out.toFloatArray();
            float[] lse = b.lse.toFloatArray();
            int g = 4 / c.kvHeads;
            for (int r = 0; r < 3; r++) {
                for (int h = 0; h < 4; h++) {
                    double dot = 0;
                    for (int d = 0; d < 16; d++) {
                        int kv = (r * c.kvHeads + h / g) * 16 + d;
                        assertEquals(c.v[kv], out[(r * 4 + h) * 16 + d], 1e-6f);
                        dot += (double) c.q[(r * 4 + h) * 16 + d] * c.k[kv];
                    }
                    assertEquals(dot / 4, lse[r * 4 + h], 1e-5);
                }
            }
        }
    }

    @Example
    void emptyBatchIsANoOp() {
        try (Arena arena = Arena.ofShared()) {
            Tensor z = Tensor.allocate(arena, 0, 32);
            Tensor lse = Tensor.allocate(arena, 0, 2);
            Attention att = attention(2, 2, 16);
            att.forward(z, z, z, null, z, lse, 0, 5, POOL);
            att.backward(z, z, z, null, z, lse, z, z, z, z, 0, 5, POOL);
        }
    }

    @Example
    void badShapesAreNamed() {
        Attention att = attention(4, 2, 16);
        try (Arena arena = Arena.ofShared()) {
            Tensor q = Tensor.allocate(arena, 10, 64);
            Tensor kv = Tensor.allocate(arena, 10, 32);
            Tensor lse = Tensor.allocate(arena, 10, 4);
            Moe4jException e = assertThrows(Moe4jException.class,
                    () -> att.forward(q, q, kv, null, q, lse, 2, 5, POOL));
            assertTrue(e.getMessage().contains(" k "), e.getMessage());
            assertThrows(Moe4jException.class, () -> att.forward(q, kv, kv, null, q, lse, 1, 10, 0, 5, 3));
            assertThrows(Moe4jException.class, () -> att.forward(q, kv, kv, null, q, lse, 1, 10, 0, 5, 0),
                    "unit range past batch*heads");
            MemorySegment shortDoc = arena.allocate(ValueLayout.JAVA_INT, 3);
            assertThrows(Moe4jException.class, () -> att.forward(q, kv, kv, shortDoc, q, lse, 1, 10, 0, 4, 0),
                    "doc ids too short");
        }
    }

    // ----------------------------------------------------------------------------------------------------------

    private static void checkForward(Case c, boolean usePool) {
        RefAttention.Forward ref = c.refForward();
        try (Arena arena = Arena.ofShared()) {
            Buffers b = new Buffers(arena, c);
            runForward(c, b, usePool);
            assertClose("out", ref.out(), b.out.toFloatArray(), 4e-6, 1e-5, c);
            assertClose("lse", ref.lse(), b.lse.toFloatArray(), 1e-5, 2e-6, c);
        }
    }

    private static void checkBackward(Case c, boolean usePool) {
        RefAttention.Grads ref = c.refBackward();
        try (Arena arena = Arena.ofShared()) {
            Buffers b = new Buffers(arena, c);
            runForward(c, b, usePool);
            b.dq.fill(Float.NaN);
            b.dk.fill(Float.NaN);
            b.dv.fill(Float.NaN);
            Attention att = attention(c.heads, c.kvHeads, c.dh);
            int units = c.batch * c.kvHeads;
            if (usePool) {
                att.backward(b.q, b.k, b.v, b.doc, b.out, b.lse, b.dOut, b.dq, b.dk, b.dv, c.batch, c.seqLen, POOL);
            } else {
                int mid = units / 2;
                att.backward(b.q, b.k, b.v, b.doc, b.out, b.lse, b.dOut, b.dq, b.dk, b.dv, c.batch, c.seqLen, 0, mid, 2);
                att.backward(b.q, b.k, b.v, b.doc, b.out, b.lse, b.dOut, b.dq, b.dk, b.dv, c.batch, c.seqLen, mid,
                        units, 1);
            }
            assertCloseScaled("dq", ref.dq(), b.dq.toFloatArray(), 1e-5, c);
            assertCloseScaled("dk", ref.dk(), b.dk.toFloatArray(), 1e-5, c);
            assertCloseScaled("dv", ref.dv(), b.dv.toFloatArray(), 1e-5, c);
        }
    }

    private static void runForward(Case c, Buffers b, boolean usePool) {
        Attention att = attention(c.heads, c.kvHeads, c.dh);
        b.out.fill(Float.NaN);
        b.lse.fill(Float.NaN);
        if (usePool) {
            att.forward(b.q, b.k, b.v, b.doc, b.out, b.lse, c.batch, c.seqLen, POOL);
        } else {
            // the range entry, units split unevenly over two scratch sets
            int units = c.batch * c.heads;
            int mid = units / 3;
            att.forward(b.q, b.k, b.v, b.doc, b.out, b.lse, c.batch, c.seqLen, mid, units, 1);
            att.forward(b.q, b.k, b.v, b.doc, b.out, b.lse, c.batch, c.seqLen, 0, mid, 0);
        }
    }

    /** Off-heap copies of a case's inputs and room for the outputs. */
    static final class Buffers {
        final Tensor q, k, v, dOut, out, lse, dq, dk, dv;
        final MemorySegment doc;

        Buffers(Arena arena, Case c) {
            int rows = c.batch * c.seqLen;
            q = Tensor.allocate(arena, rows, c.heads * c.dh).copyFrom(c.q);
            k = Tensor.allocate(arena, rows, c.kvHeads * c.dh).copyFrom(c.k);
            v = Tensor.allocate(arena, rows, c.kvHeads * c.dh).copyFrom(c.v);
            dOut = Tensor.allocate(arena, rows, c.heads * c.dh).copyFrom(c.dOut);
            out = Tensor.allocate(arena, rows, c.heads * c.dh);
            lse = Tensor.allocate(arena, rows, c.heads);
            dq = Tensor.allocate(arena, rows, c.heads * c.dh);
            dk = Tensor.allocate(arena, rows, c.kvHeads * c.dh);
            dv = Tensor.allocate(arena, rows, c.kvHeads * c.dh);
            if (c.doc == null) {
                doc = null;
            } else {
                doc = arena.allocate(ValueLayout.JAVA_INT, Math.max(1, rows));
                MemorySegment.copy(c.doc, 0, doc, ValueLayout.JAVA_INT, 0, rows);
            }
        }
    }

    private static void assertClose(String name, double[] ref, float[] got, double atol, double rtol, Case c) {
        assertEquals(ref.length, got.length, name + " length");
        for (int i = 0; i < ref.length; i++) {
            double err = Math.abs(ref[i] - got[i]);
            if (!(err <= atol + rtol * Math.abs(ref[i]))) {
                throw new AssertionError(name + "[" + i + "] = " + got[i] + ", twin " + ref[i] + " (error " + err
                        + ") in " + describe(c));
            }
        }
    }

    private static void assertCloseScaled(String name, double[] ref, float[] got, double tol, Case c) {
        double max = 0;
        for (double x : ref) {
            max = Math.max(max, Math.abs(x));
        }
        assertClose(name, ref, got, tol * (1 + max), 0, c);
    }

    private static String describe(Case c) {
        return "B=" + c.batch + " T=" + c.seqLen + " H=" + c.heads + " Hkv=" + c.kvHeads + " Dh=" + c.dh
                + (c.doc == null ? " no docs" : " docs " + java.util.Arrays.toString(c.doc));
    }

    // ----------------------------------------------------------------------------------------------------------

    static int[] divisors(int n) {
        int count = 0;
        for (int i = 1; i <= n; i++) {
            if (n % i == 0) {
                count++;
            }
        }
        int[] d = new int[count];
        for (int i = 1, j = 0; i <= n; i++) {
            if (n % i == 0) {
                d[j++] = i;
            }
        }
        return d;
    }

    /**
     * docMode 0: no doc ids; 1: one document per sequence; 2: EOS-style boundaries with probability 0.1 per
     * token; 3: probability 0.4. Modes 2 and 3 also force a document of length 1 somewhere. Ids count documents
     * (distinct within a sequence, as EOS segments are).
     */
    static int[] docIds(Random rnd, int batch, int seqLen, int docMode) {
        if (docMode == 0) {
            return null;
        }
        int[] doc = new int[batch * seqLen];
        double pBreak = docMode == 1 ? 0 : docMode == 2 ? 0.1 : 0.4;
        int id = 0;
        for (int b = 0; b < batch; b++) {
            boolean[] start = new boolean[seqLen];
            start[0] = true;
            for (int t = 1; t < seqLen; t++) {
                start[t] = rnd.nextDouble() < pBreak;
            }
            if (docMode >= 2 && seqLen >= 2) {
                int t = rnd.nextInt(seqLen);
                start[t] = true;
                if (t + 1 < seqLen) {
                    start[t + 1] = true;
                }
            }
            for (int t = 0; t < seqLen; t++) {
                if (start[t]) {
                    id++;
                }
                doc[b * seqLen + t] = id;
            }
        }
        return doc;
    }

    static float[] uniform(Random rnd, int n, float a) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) ((rnd.nextDouble() * 2 - 1) * a);
        }
        return x;
    }

    static double[] d(float[] x) {
        double[] r = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            r[i] = x[i];
        }
        return r;
    }
}
