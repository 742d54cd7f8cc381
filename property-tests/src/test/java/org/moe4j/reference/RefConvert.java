package org.moe4j.reference;

/**
 * Twins of {@code org.moe4j.simd.Convert} from the number formats' definitions (values, not bit tricks):
 * bf16 = sign, 8-bit exponent (bias 127), 7-bit significand; f16 = sign, 5-bit exponent (bias 15), 10 bits.
 */
public final class RefConvert {
    private RefConvert() {
    }

    /** Value of a bf16 pattern; NaN for NaN patterns. */
    public static double bf16Value(int bits) {
        int s = (bits >>> 15) & 1;
        int e = (bits >>> 7) & 0xFF;
        int m = bits & 0x7F;
        double sign = s == 1 ? -1 : 1;
        if (e == 0xFF) {
            return m == 0 ? sign * Double.POSITIVE_INFINITY : Double.NaN;
        }
        if (e == 0) {
            return sign * Math.scalb((double) m, -126 - 7);
        }
        return sign * Math.scalb(1.0 + m / 128.0, e - 127);
    }

    /** Value of an IEEE half pattern; NaN for NaN patterns. */
    public static double f16Value(int bits) {
        int s = (bits >>> 15) & 1;
        int e = (bits >>> 10) & 0x1F;
        int m = bits & 0x3FF;
        double sign = s == 1 ? -1 : 1;
        if (e == 0x1F) {
            return m == 0 ? sign * Double.POSITIVE_INFINITY : Double.NaN;
        }
        if (e == 0) {
            return sign * Math.scalb((double) m, -14 - 10);
        }
        return sign * Math.scalb(1.0 + m / 1024.0, e - 15);
    }

    /**
     * The bf16 pattern nearest to finite or infinite {@code v}, ties to the even pattern; NaN gives -1. The two
     * candidates are the bf16 values just below and above |v| in magnitude; the one above the largest finite
     * bf16 is 2^128, which stands for +inf.
     */
    public static int bf16Nearest(float v) {
        if (Float.isNaN(v)) {
            return -1;
        }
        int sign = Float.floatToRawIntBits(v) >>> 31;
        double a = Math.abs((double) v);
        if (Double.isInfinite(a)) {
            return (sign << 15) | 0x7F80;
        }
        // lower candidate: the largest bf16 magnitude <= a
        int lo = 0;
        for (int step = 1 << 14; step > 0; step >>= 1) {
            int c = lo + step;
            if (c <= 0x7F7F && bf16Value(c) <= a) {
                lo = c;
            }
        }
        double loV = bf16Value(lo);
        double hiV = lo == 0x7F7F ? Math.scalb(1.0, 128) : bf16Value(lo + 1);
        int pick;
        double dLo = a - loV;
        double dHi = hiV - a;
        if (dLo < dHi) {
            pick = lo;
        } else if (dHi < dLo) {
            pick = lo + 1;
        } else {
            pick = (lo & 1) == 0 ? lo : lo + 1;
        }
        return (sign << 15) | pick;
    }
}
