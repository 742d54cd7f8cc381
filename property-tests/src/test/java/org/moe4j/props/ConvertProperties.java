package org.moe4j.props;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.moe4j.reference.RefConvert;
import org.moe4j.simd.Bf16;
import org.moe4j.simd.Convert;
import org.moe4j.simd.Tensor;

/**
 * Bulk conversions: exact (bit for bit) agreement with the scalar definitions ({@link Bf16}, {@link Float}'s f16
 * methods) and with value-level twins built from the formats' definitions. Exhaustive over all 65536 bf16 and
 * f16 patterns; random and special float32 patterns (subnormals, +-0, +-inf, NaNs with payloads, rounding ties).
 */
class ConvertProperties {
    @Test
    void everyBf16PatternWidensExactly() {
        try (Arena arena = Arena.ofConfined()) {
            for (int off : new int[] {0, 1}) { // off = 1 also leaves a tail shorter than a vector
                int n = 65536 - off;
                MemorySegment src = arena.allocate(2L * 65536, 2);
                MemorySegment dst = arena.allocate(4L * 65536, 4);
                for (int b = 0; b < 65536; b++) {
                    src.setAtIndex(Tensor.SHORT, b, (short) b);
                }
                Convert.bf16ToF32(src, off, dst, 0, n);
                for (int j = 0; j < n; j++) {
                    int b = j + off;
                    float got = dst.getAtIndex(Tensor.FLOAT, j);
                    assertEquals(Float.floatToRawIntBits(Bf16.toFloat((short) b)), Float.floatToRawIntBits(got),
                            "bf16 pattern 0x" + Integer.toHexString(b));
                    double want = RefConvert.bf16Value(b);
                    assertTrue(Double.isNaN(want) ? Float.isNaN(got) : want == got, "bf16 0x" + Integer.toHexString(b));
                }
            }
        }
    }

    @Test
    void everyF16PatternWidensExactly() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(2L * 65536, 2);
            MemorySegment dst = arena.allocate(4L * 65536, 4);
            for (int b = 0; b < 65536; b++) {
                src.setAtIndex(Tensor.SHORT, b, (short) b);
            }
            Convert.f16ToF32(src, 0, dst, 0, 65536);
            for (int b = 0; b < 65536; b++) {
                float got = dst.getAtIndex(Tensor.FLOAT, b);
                assertEquals(Float.floatToRawIntBits(Float.float16ToFloat((short) b)), Float.floatToRawIntBits(got),
                        "f16 pattern 0x" + Integer.toHexString(b));
                double want = RefConvert.f16Value(b);
                assertTrue(Double.isNaN(want) ? Float.isNaN(got) : want == got, "f16 0x" + Integer.toHexString(b));
            }
        }
    }

    @Property(tries = 200)
    void floatsNarrowLikeTheScalarDefinitions(@ForAll @IntRange(min = 0, max = 300) int n, @ForAll long seed) {
        Random rnd = new Random(seed);
        float[] v = new float[n];
        int[] special = {0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFBFFFFF, 0x7FFFFFFF,
                         0x00000001, 0x807FFFFF, 0x00008000, 0x00018000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x3F808000,
                         0x3F818000, 0x3F80C000, 0xBF808000, 0x33800000, 0x477FF000, 0x477FE000, 0x387FC000};
        for (int i = 0; i < n; i++) {
            int kind = rnd.nextInt(4);
            int bits = switch (kind) {
                case 0 -> special[rnd.nextInt(special.length)];
                case 1 -> rnd.nextInt() & 0x807FFFFF; // subnormals
                case 2 -> (rnd.nextInt() & 0xFFFF0000) | 0x8000; // exact bf16 rounding ties
                default -> rnd.nextInt();
            };
            v[i] = Float.intBitsToFloat(bits);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(4L * n + 8, 4);
            MemorySegment bf = arena.allocate(2L * n + 4, 2);
            MemorySegment h = arena.allocate(2L * n + 4, 2);
            for (int i = 0; i < n; i++) {
                src.setAtIndex(Tensor.FLOAT, i + 1, v[i]); // raw bits survive: setAtIndex stores the float's bits
            }
            Convert.f32ToBf16(src, 1, bf, 1, n);
            Convert.f32ToF16(src, 1, h, 1, n);
            for (int i = 0; i < n; i++) {
                float f = src.getAtIndex(Tensor.FLOAT, i + 1);
                int got = bf.getAtIndex(Tensor.SHORT, i + 1) & 0xFFFF;
                String what = "f32 0x" + Integer.toHexString(Float.floatToRawIntBits(f));
                assertEquals(Bf16.fromFloat(f) & 0xFFFF, got, what + " -> bf16");
                int ref = RefConvert.bf16Nearest(f);
                if (ref < 0) {
                    if (!Float.isNaN(Bf16.toFloat((short) got))) {
                        fail(what + ": NaN became 0x" + Integer.toHexString(got));
                    }
                } else {
                    assertEquals(ref, got, what + " -> bf16 by the twin");
                }
                assertEquals(Float.floatToFloat16(f), h.getAtIndex(Tensor.SHORT, i + 1), what + " -> f16");
            }
        }
    }
}
