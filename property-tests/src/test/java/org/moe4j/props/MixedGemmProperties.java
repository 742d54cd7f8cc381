package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import org.moe4j.nativ.OneDnn;
import org.moe4j.nativ.OneDnnBf16Gemm;
import org.moe4j.simd.Bf16;
import org.moe4j.simd.Bf16Gemm;
import org.moe4j.simd.JavaBf16Gemm;
import org.moe4j.simd.JavaGemm;
import org.moe4j.simd.MixedGemm;
import org.moe4j.simd.WorkerPool;

/**
 * {@link MixedGemm} (float32 operands rounded to bf16, bf16 operands in place, float32 accumulation and C) against
 * the float64 twin RefGemm, on both bf16 backends: {@link JavaBf16Gemm} (widen, then the Vector API JavaGemm) and
 * oneDNN's bf16 matmul with its power-of-two blocking of m and k ({@link OneDnnBf16Gemm}). Random shapes m, n, k in
 * 0..150 (k up to 300; some m and k up to 700, so the blocking cuts several pieces), all four transposes, each
 * operand float32 or bf16, random alpha and beta, padded leading dimensions, offsets, junk around every operand.
 *
 * <p>Tolerances, per element, with S = (sqrt(k) + 1) · max|A| · max|B| · |alpha|:
 * <ul>
 *   <li>against the twin fed the bf16-rounded A and B: 4e-5 · S (bf16 × bf16 products are exact in float32; only
 *   the float32 accumulation order differs from float64);</li>
 *   <li>against the twin fed the float32 A and B: 2^-7 · S (each input rounds by at most 2^-9 relative).</li>
 * </ul>
 * Runs at the CPU's vector width and again at 256 and 128 bits (the kernel forks of this module's pom), which
 * changes the Vector API conversion and GEMM paths.
 */
class MixedGemmProperties {
    private static final WorkerPool POOL = new WorkerPool(2);
    private static final JavaBf16Gemm JAVA = new JavaBf16Gemm(new JavaGemm(POOL), POOL);
    private static OneDnnBf16Gemm onednn;

    private static synchronized Bf16Gemm onednn() {
        if (onednn == null) onednn = new OneDnnBf16Gemm(2);
        return onednn;
    }

    @AfterContainer
    static synchronized void close() {
        JAVA.close();
        if (onednn != null) onednn.close();
        onednn = null;
        POOL.close();
    }

    @Property(tries = 120)
    void javaMatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                         @ForAll @IntRange(min = 0, max = 300) int k, @ForAll boolean transA, @ForAll boolean transB,
                         @ForAll boolean aBf16, @ForAll boolean bBf16, @ForAll long seed) {
        check(JAVA, m, n, k, transA, transB, aBf16, bBf16, seed);
    }

    @Property(tries = 120)
    void oneDnnMatchesTwin(@ForAll @IntRange(min = 0, max = 150) int m, @ForAll @IntRange(min = 0, max = 150) int n,
                           @ForAll @IntRange(min = 0, max = 300) int k, @ForAll boolean transA,
                           @ForAll boolean transB, @ForAll boolean aBf16, @ForAll boolean bBf16, @ForAll long seed) {
        if (!bf16Native()) return;
        check(onednn(), m, n, k, transA, transB, aBf16, bBf16, seed);
    }

    /** Many blocking pieces: m and k with many one-bits (e.g. 511 = 256 + 128 + ... + 1). */
    @Property(tries = 12)
    void oneDnnBlockedLarge(@ForAll @IntRange(min = 257, max = 700) int m, @ForAll @IntRange(min = 1, max = 90) int n,
                            @ForAll @IntRange(min = 257, max = 700) int k, @ForAll boolean transA,
                            @ForAll boolean transB, @ForAll long seed) {
        if (!bf16Native()) return;
        check(onednn(), m, n, k, transA, transB, false, true, seed);
    }

    /** Token counts 1..300 per "expert" at fixed widths create at most ~9 sizes of m, so a bounded primitive set. */
    @Property(tries = 3)
    void oneDnnPrimitivesStayBounded(@ForAll long seed) {
        if (!bf16Native()) return;
        Random rnd = new Random(seed);
        try (OneDnnBf16Gemm g = new OneDnnBf16Gemm(2); Arena arena = Arena.ofConfined()) {
            int n = 24, k = 32, maxM = 300;
            MemorySegment a = arena.allocate((long) maxM * k * 2, 64), b = arena.allocate((long) n * k * 2, 64);
            MemorySegment c = arena.allocate((long) maxM * n * 4, 64);
            for (int i = 0; i < 200; i++) {
                int m = 1 + rnd.nextInt(maxM);
                g.gemm(false, true, m, n, k, 1f, a, 0, k, b, 0, k, 0f, c, 0, n);
            }
            // m pieces are powers of two up to 256: at most 9 shapes, whatever the 200 token counts were
            assertTrue(g.primitivesCreated() <= 9, "primitives created: " + g.primitivesCreated());
        }
    }

    private static boolean bf16Native() {
        assertTrue(OneDnn.available(), OneDnn.reason());
        return OneDnn.bf16Native();
    }

    static void check(Bf16Gemm backend, int m, int n, int k, boolean transA, boolean transB, boolean aBf16,
                      boolean bBf16, long seed) {
        GemmCase p = new GemmCase(new Random(seed), m, n, k, transA, transB);
        MixedGemm mixed = new MixedGemm(backend, POOL);
        float[] out;
        int pad = 5;
        try (Arena arena = Arena.ofShared()) {
            MemorySegment as = aBf16 ? bf16(arena, p.a, pad) : KernelsSupport.floats(arena, p.a, pad);
            MemorySegment bs = bBf16 ? bf16(arena, p.b, pad) : KernelsSupport.floats(arena, p.b, pad);
            MemorySegment cs = KernelsSupport.floats(arena, p.c, pad);
            mixed.gemm(transA, transB, m, n, k, p.alpha, as, pad + p.aOff, p.lda, aBf16, bs, pad + p.bOff, p.ldb,
                    bBf16, p.beta, cs, pad + p.cOff, p.ldc);
            KernelsSupport.assertPadIntact("C", cs, pad, p.c.length);
            out = KernelsSupport.read(cs, pad, p.c.length);
        } finally {
            mixed.close();
        }
        String what = backend.name() + (aBf16 ? " A bf16" : " A f32") + (bBf16 ? " B bf16" : " B f32");
        p.check(what + " vs rounded inputs", out, p.expected(p.aBf16Rounded(), p.bBf16Rounded()), 4e-5);
        p.check(what + " vs float inputs", out, p.expected(p.a, p.b), 0x1p-7);
    }

    private static MemorySegment bf16(Arena arena, float[] v, int pad) {
        MemorySegment s = arena.allocate((v.length + 2L * pad) * 2 + 2, 2);
        for (int i = 0; i < s.byteSize() / 2; i++) s.setAtIndex(ValueLayout.JAVA_SHORT, i, (short) 0x7FC1); // junk
        for (int i = 0; i < v.length; i++) s.setAtIndex(ValueLayout.JAVA_SHORT, pad + i, Bf16.fromFloat(v[i]));
        return s;
    }
}
