package org.moe4j.simd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;

/** The root species: width from the properties, every derived species of that width, errors that name the fix. */
class SimdTest {
    @Test
    void speciesShareTheRootWidth() {
        assertEquals(Simd.BITS, Simd.FLOAT.vectorBitSize());
        assertEquals(Simd.BITS, Simd.INT.vectorBitSize());
        assertEquals(Simd.FLOAT.length(), Simd.SHORT_HALF.length());
        assertEquals(Simd.BITS / 32, Simd.FLOAT_LANES);
        assertEquals(Simd.FLOAT, VectorMath.F);
        assertEquals(Simd.FLOAT_LANES, org.moe4j.simd.gemm.GemmKernel.L);
    }

    @Test
    void widthFollowsTheProperties() {
        int native_ = Math.min(Simd.PREFERRED_BITS, 512);
        assertEquals(native_, Simd.bits(null, null));
        assertEquals(native_, Simd.bits(" ", ""));
        assertEquals(128, Simd.bits("128", null));
        assertEquals(128, Simd.bits(null, "128"));
        assertEquals(Math.min(256, native_), Simd.bits(null, "256"));
        assertEquals(128, Simd.bits("128", "512"), "bits wins over maxBits");
    }

    @Test
    void badWidthsAreRefusedWithTheProperty() {
        Moe4jException e = assertThrows(Moe4jException.class, () -> Simd.bits("300", null));
        assertTrue(e.getMessage().contains("-Dmoe4j.simd.bits=300: expected 128, 256 or 512"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> Simd.bits(null, "wide"));
        assertTrue(e.getMessage().contains("-Dmoe4j.simd.maxBits=wide"), e.getMessage());
        if (Simd.PREFERRED_BITS < 512) {
            e = assertThrows(Moe4jException.class, () -> Simd.bits("512", null));
            assertTrue(e.getMessage().contains("widest native vector"), e.getMessage());
        }
    }
}
