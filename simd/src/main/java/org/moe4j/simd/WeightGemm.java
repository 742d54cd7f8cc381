package org.moe4j.simd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * PLACEHOLDER (replaced by the weight-streaming kernel): out[M, N] = x[M, K] · W[N, K]ᵀ + beta·out with W F32 or
 * BF16, through {@code big} (BF16 rows dequantised into a scratch panel first).
 */
public final class WeightGemm {
    private static final int CHUNK = 256;
    private final Gemm big;
    private final MemorySegment scratch;
    private final int maxK;

    public WeightGemm(WorkerPool pool, Gemm big, int maxK) {
        this.big = big;
        this.maxK = Math.max(1, maxK);
        this.scratch = Arena.ofAuto().allocate((long) CHUNK * this.maxK * Float.BYTES, Tensor.ALIGNMENT);
    }

    public int smallRows() {
        return 0;
    }

    public void f32(int M, int N, int K, MemorySegment x, long xOff, int ldx, MemorySegment w, long wOff, int ldw,
                    float beta, MemorySegment out, long oOff, int ldo) {
        big.sgemm(false, true, M, N, K, 1f, x, xOff, ldx, w, wOff, ldw, beta, out, oOff, ldo);
    }

    public void bf16(int M, int N, int K, MemorySegment x, long xOff, int ldx, MemorySegment w, long wOff, int ldw,
                     float beta, MemorySegment out, long oOff, int ldo) {
        for (int n0 = 0; n0 < N; n0 += CHUNK) {
            int nb = Math.min(CHUNK, N - n0);
            for (int r = 0; r < nb; r++)
                for (int c = 0; c < K; c++)
                    scratch.setAtIndex(Tensor.FLOAT, (long) r * K + c,
                            fromBf16(w.getAtIndex(Tensor.SHORT, wOff + (long) (n0 + r) * ldw + c)));
            big.sgemm(false, true, M, nb, K, 1f, x, xOff, ldx, scratch, 0, K, beta, out, oOff + n0, ldo);
        }
    }

    public static short toBf16(float f) {
        int b = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) return (short) ((b >>> 16) | 0x40);
        return (short) ((b + 0x7FFF + ((b >>> 16) & 1)) >>> 16);
    }

    public static float fromBf16(short b) {
        return Float.intBitsToFloat((b & 0xFFFF) << 16);
    }

    public static void toBf16(MemorySegment src, long srcOff, MemorySegment dst, long dstOff, long n) {
        for (long i = 0; i < n; i++) dst.setAtIndex(Tensor.SHORT, dstOff + i, toBf16(src.getAtIndex(Tensor.FLOAT, srcOff + i)));
    }
}
