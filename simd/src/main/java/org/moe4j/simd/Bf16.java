package org.moe4j.simd;

/** Scalar bfloat16 conversions (the upper 16 bits of an IEEE float32). Bulk conversion lives in {@code Convert}. */
public final class Bf16 {
    private Bf16() {
    }

    /** bf16 bits to float: a shift, exact. */
    public static float toFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** float to bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
    public static short fromFloat(float v) {
        int x = Float.floatToRawIntBits(v);
        if ((x & 0x7FFFFFFF) > 0x7F800000) {
            return (short) ((x >>> 16) | 0x0040);
        }
        int rounding = 0x7FFF + ((x >>> 16) & 1);
        return (short) ((x + rounding) >>> 16);
    }
}
