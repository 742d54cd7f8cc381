package org.moe4j.simd;

import static org.moe4j.simd.VectorMath.L;
import static org.moe4j.simd.VectorMath.NATIVE;

import java.lang.foreign.MemorySegment;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Bulk conversions between the storage types and float32. Each agrees bit for bit with the scalar definition:
 * {@link Bf16#toFloat}/{@link Bf16#fromFloat} (round to nearest even, NaN kept as a quiet NaN) and
 * {@link Float#float16ToFloat}/{@link Float#floatToFloat16}. Offsets are in elements of each buffer's own type
 * (2 bytes for bf16/f16, 4 for f32); {@code n} elements from each offset.
 */
public final class Convert {
    private Convert() {
    }

    private static final VectorSpecies<Integer> I = Simd.INT;
    private static final VectorSpecies<Short> S = Simd.SHORT_HALF;

    /** bf16 src [n] -> f32 dst [n]: the bits shifted into the upper half, exact. */
    public static void bf16ToF32(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            ShortVector h = ShortVector.fromMemorySegment(S, src, (srcOff + i) * 2, NATIVE);
            IntVector x = (IntVector) h.convertShape(VectorOperators.S2I, I, 0);
            x.lanewise(VectorOperators.LSHL, 16).intoMemorySegment(dst, (dstOff + i) * 4, NATIVE);
        }
        for (; i < n; i++) {
            dst.setAtIndex(Tensor.FLOAT, dstOff + i, Bf16.toFloat(src.getAtIndex(Tensor.SHORT, srcOff + i)));
        }
    }

    /** f32 src [n] -> bf16 dst [n], round to nearest even; NaN becomes (upper bits | quiet bit). */
    public static void f32ToBf16(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            storeBf16(IntVector.fromMemorySegment(I, src, (srcOff + i) * 4, NATIVE), dst, (dstOff + i) * 2);
        }
        for (; i < n; i++) {
            dst.setAtIndex(Tensor.SHORT, dstOff + i, Bf16.fromFloat(src.getAtIndex(Tensor.FLOAT, srcOff + i)));
        }
    }

    /**
     * The float bits x (one vector) rounded to bf16, nearest even (NaN stays NaN, quiet), stored at byte offset
     * {@code at} of dst: {@link Bf16#fromFloat} lane-wise. Package-private: the optimizer writes the BF16 copy of
     * the weights it updates with it.
     */
    static void storeBf16(IntVector x, MemorySegment dst, long at) {
        IntVector hi = x.lanewise(VectorOperators.LSHR, 16);
        VectorMask<Integer> nan = x.and(0x7FFFFFFF).compare(VectorOperators.GT, 0x7F800000);
        IntVector rounded = x.add(hi.and(1).add(0x7FFF)).lanewise(VectorOperators.LSHR, 16);
        IntVector r = rounded.blend(hi.or(0x0040), nan);
        ShortVector s = (ShortVector) r.convertShape(VectorOperators.I2S, S, 0);
        s.intoMemorySegment(dst, at, NATIVE);
    }

    /**
     * IEEE half src [n] -> f32 dst [n], exact. Finite values: the 15 magnitude bits shifted into float position
     * and scaled by 2^112 (re-biasing 15 -> 127; half subnormals become exact float normals). Inf/NaN: all-ones
     * exponent with the 10 significand bits kept and, for NaN, the quiet bit set, as {@link Float#float16ToFloat}
     * does.
     */
    public static void f16ToF32(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            ShortVector h = ShortVector.fromMemorySegment(S, src, (srcOff + i) * 2, NATIVE);
            IntVector x = (IntVector) h.convertShape(VectorOperators.S2I, I, 0);
            IntVector sign = x.and(0x8000).lanewise(VectorOperators.LSHL, 16);
            IntVector em = x.and(0x7FFF);
            IntVector shifted = em.lanewise(VectorOperators.LSHL, 13);
            IntVector finite = shifted.reinterpretAsFloats().mul(0x1p112f).reinterpretAsInts();
            // inf: all-ones exponent; NaN: also the quiet bit, as Float.float16ToFloat (vcvtph2ps) gives
            IntVector special = shifted.or(0x7F800000);
            special = special.blend(special.or(0x00400000), em.compare(VectorOperators.GT, 0x7C00));
            IntVector bits = finite.blend(special, em.compare(VectorOperators.GE, 0x7C00)).or(sign);
            bits.intoMemorySegment(dst, (dstOff + i) * 4, NATIVE);
        }
        for (; i < n; i++) {
            dst.setAtIndex(Tensor.FLOAT, dstOff + i, Float.float16ToFloat(src.getAtIndex(Tensor.SHORT, srcOff + i)));
        }
    }

    /** f32 src [n] -> IEEE half dst [n], round to nearest even (scalar {@link Float#floatToFloat16}, intrinsic). */
    public static void f32ToF16(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        for (long i = 0; i < n; i++) {
            dst.setAtIndex(Tensor.SHORT, dstOff + i, Float.floatToFloat16(src.getAtIndex(Tensor.FLOAT, srcOff + i)));
        }
    }
}
