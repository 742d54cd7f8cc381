package org.moe4j.simd;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;

/**
 * The one root of every vector species in moe4j: each kernel derives its species from {@link #SHAPE}, so one
 * switch sets the width of all of them. {@code -Dmoe4j.simd.bits=128|256|512} picks the width; the default is the
 * widest the CPU runs natively ({@link FloatVector#SPECIES_PREFERRED}). A width above that is refused rather than
 * run on the Vector API's emulated (per-lane Java) vectors, which would be ~100x slower. {@code
 * -Dmoe4j.simd.maxBits=N} instead takes the narrower of N and the native width (the test runs at 128 and 256 bits
 * use it, so they still run on a CPU whose widest vector is narrower).
 *
 * <p>Narrower widths exist for portability (AVX2 is 256-bit, NEON 128-bit) and for tests: the kernel properties
 * also run at 128 and 256 bits on an AVX-512 machine. The bits a kernel produces can depend on the width (lane
 * partial sums are grouped differently), never on the thread count or on whether the code runs interpreted or
 * compiled.
 */
public final class Simd {
    private Simd() {
    }

    /** The system property that sets the vector width in bits. */
    public static final String BITS_PROPERTY = "moe4j.simd.bits";

    /** The system property that caps the vector width in bits (ignored when {@link #BITS_PROPERTY} is set). */
    public static final String MAX_BITS_PROPERTY = "moe4j.simd.maxBits";

    /** The widest vector the CPU runs natively, in bits. */
    public static final int PREFERRED_BITS = FloatVector.SPECIES_PREFERRED.vectorBitSize();

    /** The vector width every kernel uses, in bits: 128, 256 or 512. */
    public static final int BITS = bits(System.getProperty(BITS_PROPERTY), System.getProperty(MAX_BITS_PROPERTY));

    /** The root shape. */
    public static final VectorShape SHAPE = VectorShape.forBitSize(BITS);

    /** Floats, one full vector: the species of every float kernel. */
    public static final VectorSpecies<Float> FLOAT = VectorSpecies.of(float.class, SHAPE);

    /** Ints of the same width (bit tricks on float lanes: exponent building, conversions). */
    public static final VectorSpecies<Integer> INT = VectorSpecies.of(int.class, SHAPE);

    /** Shorts of half the width: as many lanes as {@link #FLOAT}, for bf16/f16 values widened to float. */
    public static final VectorSpecies<Short> SHORT_HALF = VectorSpecies.of(short.class,
            VectorShape.forBitSize(BITS / 2));

    /** Float lanes per vector (4, 8 or 16). */
    public static final int FLOAT_LANES = FLOAT.length();

    /** The width for a {@link #BITS_PROPERTY} and a {@link #MAX_BITS_PROPERTY} value (each may be null). */
    static int bits(String value, String max) {
        if ((value == null || value.isBlank()) && max != null && !max.isBlank()) {
            return Math.min(parse(MAX_BITS_PROPERTY, max), bits(null, null));
        }
        if (value == null || value.isBlank()) {
            if (PREFERRED_BITS < 128) {
                throw new Moe4jException("this CPU's preferred vector is " + PREFERRED_BITS
                        + " bits; moe4j kernels need at least 128-bit vectors");
            }
            return Math.min(PREFERRED_BITS, 512);
        }
        int b = parse(BITS_PROPERTY, value);
        if (b > PREFERRED_BITS) {
            throw new Moe4jException("-D" + BITS_PROPERTY + "=" + b + ": this CPU's widest native vector is "
                    + PREFERRED_BITS + " bits (wider vectors would be emulated lane by lane)");
        }
        return b;
    }

    private static int parse(String property, String value) {
        int b;
        try {
            b = Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            b = -1;
        }
        if (b != 128 && b != 256 && b != 512) {
            throw new Moe4jException("-D" + property + "=" + value + ": expected 128, 256 or 512");
        }
        return b;
    }
}
