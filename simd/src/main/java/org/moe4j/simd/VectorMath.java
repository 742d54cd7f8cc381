package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * Shared pieces of the element-wise kernels: the float species (from {@link Simd}), a vectorised exp with its scalar
 * twin, and a few row reductions that return primitives (so no {@code Vector} escapes a call). Every piece gives
 * the same bits interpreted and compiled: no {@code reduceLanes} (its order is unspecified) and no transcendental
 * {@code lanewise} op (SVML when compiled, {@code Math} per lane when not). Package-private: kernels are the public surface.
 */
final class VectorMath {
    private VectorMath() {
    }

    static final VectorSpecies<Float> F = Simd.FLOAT;
    static final int L = F.length();
    static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    // rotations by 8, 4, 2, 1 lanes for the fixed-order lane sum
    private static final VectorShuffle<Float> ROT8 = VectorShuffle.fromOp(F, i -> (i + 8) % L);
    private static final VectorShuffle<Float> ROT4 = VectorShuffle.fromOp(F, i -> (i + 4) % L);
    private static final VectorShuffle<Float> ROT2 = VectorShuffle.fromOp(F, i -> (i + 2) % L);
    private static final VectorShuffle<Float> ROT1 = VectorShuffle.fromOp(F, i -> (i + 1) % L);

    // exp(x) = 2^n * e^r, n = rint(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2]; e^r by the Cephes expf polynomial
    // (max relative error ~2 ulp on the reduced range). 2^n is applied as two factors 2^(n>>1) * 2^(n - n>>1), so
    // n from -159 to 145 needs no special case: results below ~1e-45 round to 0 (subnormals come out right),
    // above 3.4e38 overflow to +inf. The input is clamped to [-110, 100] first (both well past the float range of
    // exp), which keeps n small; NaN passes through min/max and the polynomial as NaN.
    private static final float EXP_LO = -110f;
    private static final float EXP_HI = 100f;
    private static final float LOG2E = 1.44269504088896341f;
    private static final float LN2_HI = 0.693359375f;
    private static final float LN2_LO = -2.12194440e-4f;
    private static final float ROUND_MAGIC = 12582912f; // 1.5 * 2^23: adding it rounds to an integer in the low bits
    private static final int ROUND_MAGIC_BITS = 0x4B400000;
    private static final float P0 = 1.9875691500E-4f;
    private static final float P1 = 1.3981999507E-3f;
    private static final float P2 = 8.3334519073E-3f;
    private static final float P3 = 4.1665795894E-2f;
    private static final float P4 = 1.6666665459E-1f;
    private static final float P5 = 5.0000001201E-1f;

    /**
     * e^x lane-wise, ~2 ulp (~1e-7 relative); exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN. Built only from
     * exactly rounded operations (fma, mul, add, min/max, integer shifts), so the interpreter, C1 and C2 give the
     * same bits, and each lane equals {@link #exp(float)} of it. The Vector API's {@code lanewise(EXP)} is an SVML
     * stub once C2 compiles it but {@code Math.exp} per lane before that, which differs in the last bit in ~1% of
     * lanes: a run resumed in a fresh JVM then drifts from a straight run.
     */
    static FloatVector exp(FloatVector x) {
        FloatVector xc = x.max(EXP_LO).min(EXP_HI);
        FloatVector t = xc.fma(LOG2E, ROUND_MAGIC);
        FloatVector n = t.sub(ROUND_MAGIC);
        FloatVector r = xc.sub(n.mul(LN2_HI)); // exact: LN2_HI has 9 significant bits and |n| <= 159
        r = n.fma(FloatVector.broadcast(F, -LN2_LO), r);
        FloatVector p = r.fma(P0, P1);
        p = p.fma(r, FloatVector.broadcast(F, P2));
        p = p.fma(r, FloatVector.broadcast(F, P3));
        p = p.fma(r, FloatVector.broadcast(F, P4));
        p = p.fma(r, FloatVector.broadcast(F, P5));
        FloatVector r2 = r.mul(r);
        p = p.fma(r2, r).add(1f);
        IntVector ni = t.reinterpretAsInts().sub(ROUND_MAGIC_BITS);
        IntVector n1 = ni.lanewise(VectorOperators.ASHR, 1);
        IntVector n2 = ni.sub(n1);
        FloatVector s1 = n1.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        FloatVector s2 = n2.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        return p.mul(s1).mul(s2);
    }

    /**
     * x[i] = exp(x[i] - m) over [from, to) (whole vectors), returns the sum: {@link #exp(FloatVector)} written out
     * in the loop, the same operations in the same order (so the same bits, tested), with the constants broadcast
     * once. Written out because this method is then too large for C2 to inline into its caller: attention's tile
     * loop, which with ~25 more inlined Vector API calls runs past C2's node budget and leaves vectors boxed
     * (measured: ~1 MB per training step of a tiny model).
     */
    static float expSubInPlace(float[] x, int from, int to, float m) {
        FloatVector lo = FloatVector.broadcast(F, EXP_LO);
        FloatVector hi = FloatVector.broadcast(F, EXP_HI);
        FloatVector log2e = FloatVector.broadcast(F, LOG2E);
        FloatVector magic = FloatVector.broadcast(F, ROUND_MAGIC);
        FloatVector ln2Hi = FloatVector.broadcast(F, LN2_HI);
        FloatVector negLn2Lo = FloatVector.broadcast(F, -LN2_LO);
        FloatVector p0 = FloatVector.broadcast(F, P0);
        FloatVector p1 = FloatVector.broadcast(F, P1);
        FloatVector p2 = FloatVector.broadcast(F, P2);
        FloatVector p3 = FloatVector.broadcast(F, P3);
        FloatVector p4 = FloatVector.broadcast(F, P4);
        FloatVector p5 = FloatVector.broadcast(F, P5);
        FloatVector one = FloatVector.broadcast(F, 1f);
        FloatVector sum = FloatVector.zero(F);
        for (int i = from; i < to; i += L) {
            FloatVector xc = FloatVector.fromArray(F, x, i).sub(m).max(lo).min(hi);
            FloatVector t = xc.fma(log2e, magic);
            FloatVector n = t.sub(magic);
            FloatVector r = xc.sub(n.mul(ln2Hi));
            r = n.fma(negLn2Lo, r);
            FloatVector p = r.fma(p0, p1);
            p = p.fma(r, p2);
            p = p.fma(r, p3);
            p = p.fma(r, p4);
            p = p.fma(r, p5);
            FloatVector r2 = r.mul(r);
            p = p.fma(r2, r).add(one);
            IntVector ni = t.reinterpretAsInts().sub(ROUND_MAGIC_BITS);
            IntVector n1 = ni.lanewise(VectorOperators.ASHR, 1);
            IntVector n2 = ni.sub(n1);
            FloatVector s1 = n1.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
            FloatVector s2 = n2.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
            FloatVector e = p.mul(s1).mul(s2);
            e.intoArray(x, i);
            sum = sum.add(e);
        }
        return sum(sum);
    }

    /**
     * Scalar e^x for loop tails and per-row factors: the same operations as {@link #exp(FloatVector)} in the same
     * order ({@code Math.fma} is exactly rounded in every execution mode), so it gives the same bits as a lane.
     */
    static float exp(float x) {
        float xc = Math.min(Math.max(x, EXP_LO), EXP_HI);
        float t = Math.fma(xc, LOG2E, ROUND_MAGIC);
        float n = t - ROUND_MAGIC;
        float r = xc - n * LN2_HI;
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(r, P0, P1);
        p = Math.fma(p, r, P2);
        p = Math.fma(p, r, P3);
        p = Math.fma(p, r, P4);
        p = Math.fma(p, r, P5);
        float r2 = r * r;
        p = Math.fma(p, r2, r) + 1f;
        int ni = Float.floatToRawIntBits(t) - ROUND_MAGIC_BITS;
        int n1 = ni >> 1;
        int n2 = ni - n1;
        float s1 = Float.intBitsToFloat((n1 + 127) << 23);
        float s2 = Float.intBitsToFloat((n2 + 127) << 23);
        return p * s1 * s2;
    }

    /**
     * Natural log for per-row values (logsumexp): StrictMath's fdlibm gives the same bits in every JVM mode and on
     * every platform, which {@code Math.log} (an intrinsic stub where one exists) does not promise.
     */
    static float log(float x) {
        return (float) StrictMath.log(x);
    }

    /**
     * Σ of the lanes in a fixed pairwise order. {@code reduceLanes(ADD)} leaves the order unspecified, and the
     * JIT-compiled and interpreted forms do differ, so results would change as code warms up; with this sum a
     * computation gives the same bits cold and warm (exact resume depends on it).
     */
    static float sum(FloatVector v) {
        if (L >= 16) v = v.add(v.rearrange(ROT8));
        if (L >= 8) v = v.add(v.rearrange(ROT4));
        if (L >= 4) v = v.add(v.rearrange(ROT2));
        if (L >= 2) v = v.add(v.rearrange(ROT1));
        return v.lane(0);
    }

    static float get(MemorySegment s, long elem) {
        return s.getAtIndex(Tensor.FLOAT, elem);
    }

    static void set(MemorySegment s, long elem, float v) {
        s.setAtIndex(Tensor.FLOAT, elem, v);
    }

    /** Σ a[i]^2 over n floats from element offset {@code off}. */
    static float sumSquares(MemorySegment a, long off, int n) {
        FloatVector s0 = FloatVector.zero(F);
        FloatVector s1 = FloatVector.zero(F);
        FloatVector s2 = FloatVector.zero(F);
        FloatVector s3 = FloatVector.zero(F);
        int i = 0;
        for (int b4 = n - 4 * L; i <= b4; i += 4 * L) {
            FloatVector v0 = FloatVector.fromMemorySegment(F, a, (off + i) * 4L, NATIVE);
            FloatVector v1 = FloatVector.fromMemorySegment(F, a, (off + i + L) * 4L, NATIVE);
            FloatVector v2 = FloatVector.fromMemorySegment(F, a, (off + i + 2 * L) * 4L, NATIVE);
            FloatVector v3 = FloatVector.fromMemorySegment(F, a, (off + i + 3 * L) * 4L, NATIVE);
            s0 = v0.fma(v0, s0);
            s1 = v1.fma(v1, s1);
            s2 = v2.fma(v2, s2);
            s3 = v3.fma(v3, s3);
        }
        for (int b = F.loopBound(n); i < b; i += L) {
            FloatVector v = FloatVector.fromMemorySegment(F, a, (off + i) * 4L, NATIVE);
            s0 = v.fma(v, s0);
        }
        float s = sum(s0.add(s1).add(s2.add(s3)));
        for (; i < n; i++) {
            float v = get(a, off + i);
            s += v * v;
        }
        return s;
    }

    /** Σ a[i] b[i] over n floats. */
    static float dot(MemorySegment a, long aOff, MemorySegment b, long bOff, int n) {
        FloatVector s0 = FloatVector.zero(F);
        FloatVector s1 = FloatVector.zero(F);
        int i = 0;
        for (int b2 = n - 2 * L; i <= b2; i += 2 * L) {
            FloatVector b0 = FloatVector.fromMemorySegment(F, b, (bOff + i) * 4L, NATIVE);
            FloatVector b1 = FloatVector.fromMemorySegment(F, b, (bOff + i + L) * 4L, NATIVE);
            s0 = FloatVector.fromMemorySegment(F, a, (aOff + i) * 4L, NATIVE).fma(b0, s0);
            s1 = FloatVector.fromMemorySegment(F, a, (aOff + i + L) * 4L, NATIVE).fma(b1, s1);
        }
        for (int bd = F.loopBound(n); i < bd; i += L) {
            FloatVector b0 = FloatVector.fromMemorySegment(F, b, (bOff + i) * 4L, NATIVE);
            s0 = FloatVector.fromMemorySegment(F, a, (aOff + i) * 4L, NATIVE).fma(b0, s0);
        }
        float s = sum(s0.add(s1));
        for (; i < n; i++) {
            s += get(a, aOff + i) * get(b, bOff + i);
        }
        return s;
    }

    /**
     * The lanes of columns [c, c + L) allowed by a row bitset (bit c of word c >>> 6). {@code c} is a multiple of
     * L, and L divides 64, so the L bits lie in one word.
     */
    static VectorMask<Float> allowed(MemorySegment mask, long rowWord, int c) {
        long word = mask.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, rowWord + (c >>> 6));
        return VectorMask.fromLong(F, word >>> (c & 63));
    }

    /** Whether column c is allowed by the row bitset starting at word {@code rowWord}. */
    static boolean isAllowed(MemorySegment mask, long rowWord, int c) {
        long word = mask.getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, rowWord + (c >>> 6));
        return ((word >>> (c & 63)) & 1L) != 0;
    }
}
