package org.moe4j.simd;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.Moe4jException;

/**
 * Rotary position embedding, rotate-half convention (GPT-NeoX / Hugging Face Llama, OLMoE): within each head of
 * {@code Dh} values, pair {@code i} is {@code (x[i], x[i + Dh/2])} for {@code i < Dh/2}, rotated by the angle
 * {@code pos * theta^(-2i/Dh)}:
 * <pre>
 *   x'[i]        = x[i] cos - x[i + Dh/2] sin
 *   x'[i + Dh/2] = x[i + Dh/2] cos + x[i] sin
 * </pre>
 * Backward is the rotation by the negative angle (the rotation is orthogonal), applied to the gradient.
 *
 * <p>The cos/sin tables [maxT, Dh/2] are computed once, in double, and rounded to float. Applying allocates
 * nothing. A Rope object is immutable and safe to share between threads.
 */
public final class Rope {
    private static final VectorSpecies<Float> SPECIES = Simd.FLOAT;
    private static final int L = SPECIES.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private final int maxT;
    private final int headDim;
    private final int half;
    private final double theta;
    private final float[] cos; // [maxT, Dh/2]
    private final float[] sin; // [maxT, Dh/2]

    /** Tables for positions {@code 0..maxT-1} of heads of {@code headDim} (even) values, base {@code theta}. */
    public Rope(int maxT, int headDim, double theta) {
        if (maxT < 1) {
            throw new Moe4jException("Rope: maxT must be >= 1, got " + maxT);
        }
        if (headDim < 2 || headDim % 2 != 0) {
            throw new Moe4jException("Rope: headDim must be even and >= 2, got " + headDim);
        }
        if (!(theta > 1.0) || Double.isInfinite(theta)) {
            throw new Moe4jException("Rope: theta must be a finite number > 1, got " + theta);
        }
        if ((long) maxT * (headDim / 2) > Integer.MAX_VALUE - 8) {
            throw new Moe4jException("Rope: table of maxT " + maxT + " x " + headDim / 2 + " is too large");
        }
        this.maxT = maxT;
        this.headDim = headDim;
        this.half = headDim / 2;
        this.theta = theta;
        this.cos = new float[maxT * half];
        this.sin = new float[maxT * half];
        // StrictMath: the table is built once, and fdlibm gives the same bits in every JVM mode and on every CPU
        // (Math's intrinsics need not), so a resumed run sees the same table as the run it continues
        for (int i = 0; i < half; i++) {
            double invFreq = StrictMath.pow(theta, -2.0 * i / headDim);
            for (int p = 0; p < maxT; p++) {
                double a = p * invFreq;
                cos[p * half + i] = (float) StrictMath.cos(a);
                sin[p * half + i] = (float) StrictMath.sin(a);
            }
        }
    }

    public int maxT() {
        return maxT;
    }

    public int headDim() {
        return headDim;
    }

    public double theta() {
        return theta;
    }

    /**
     * In place, rows {@code [rowStart, rowEnd)} of {@code x [B*T, heads*Dh]} (packed sequences of {@code seqLen}
     * tokens): row {@code r} is at position {@code r % seqLen}.
     */
    public void forward(Tensor x, int heads, int seqLen, int rowStart, int rowEnd) {
        apply(x, heads, seqLen, rowStart, rowEnd, false, "x");
    }

    /** The gradient of {@link #forward}: rotates {@code dx} rows by the negative angle, in place. */
    public void backward(Tensor dx, int heads, int seqLen, int rowStart, int rowEnd) {
        apply(dx, heads, seqLen, rowStart, rowEnd, true, "dx");
    }

    /** {@link #forward} over every row of {@code x}. */
    public void forward(Tensor x, int heads, int seqLen) {
        apply(x, heads, seqLen, 0, x.dim(0), false, "x");
    }

    /** {@link #backward} over every row of {@code dx}. */
    public void backward(Tensor dx, int heads, int seqLen) {
        apply(dx, heads, seqLen, 0, dx.dim(0), true, "dx");
    }

    /**
     * One row of {@code heads * Dh} floats at element {@code offset} of {@code x}, at position {@code pos} (for
     * decoding with a KV cache, where a row's position is not its row index); {@code inverse} rotates backwards.
     */
    public void rotate(MemorySegment x, long offset, int heads, int pos, boolean inverse) {
        if (pos < 0 || pos >= maxT) {
            throw new Moe4jException("Rope: position " + pos + " outside the table [0, " + maxT + ")");
        }
        if (heads < 1 || offset < 0 || (offset + (long) heads * headDim) * Float.BYTES > x.byteSize()) {
            throw new Moe4jException("Rope: row at element " + offset + " with " + heads + " heads of " + headDim
                    + " does not fit a segment of " + x.byteSize() + " bytes");
        }
        rotateRow(x, offset * Float.BYTES, heads, pos, inverse);
    }

    private void apply(Tensor x, int heads, int seqLen, int rowStart, int rowEnd, boolean inverse, String name) {
        if (x.dtype() != DType.F32 || x.rank() != 2) {
            throw new Moe4jException("Rope: " + name + " must be a 2-D F32 tensor [B*T, heads*Dh], got " + x);
        }
        if (heads < 1 || x.dim(1) != heads * headDim) {
            throw new Moe4jException("Rope: " + name + " " + x + " must have heads*Dh = " + heads + "*" + headDim
                    + " columns");
        }
        if (seqLen < 1 || seqLen > maxT) {
            throw new Moe4jException("Rope: seqLen " + seqLen + " outside [1, maxT=" + maxT + "]");
        }
        if (x.dim(0) % seqLen != 0) {
            throw new Moe4jException("Rope: " + name + " " + x + " rows are not a multiple of seqLen " + seqLen);
        }
        if (rowStart < 0 || rowEnd > x.dim(0) || rowStart > rowEnd) {
            throw new Moe4jException("Rope: row range [" + rowStart + ", " + rowEnd + ") outside " + name + " " + x);
        }
        MemorySegment seg = x.segment();
        long rowBytes = (long) x.dim(1) * Float.BYTES;
        for (int r = rowStart; r < rowEnd; r++) {
            rotateRow(seg, r * rowBytes, heads, r % seqLen, inverse);
        }
    }

    // x [heads, Dh] at byte offset base, position pos: the rotate-half rotation of every head
    private void rotateRow(MemorySegment x, long base, int heads, int pos, boolean inverse) {
        final int h2 = half;
        final int t = pos * h2;
        final float sgn = inverse ? -1f : 1f;
        final int bound = SPECIES.loopBound(h2);
        final long halfBytes = (long) h2 * Float.BYTES;
        for (int h = 0; h < heads; h++) {
            long o1 = base + (long) h * headDim * Float.BYTES;
            long o2 = o1 + halfBytes;
            int i = 0;
            for (; i < bound; i += L) {
                long b = (long) i * Float.BYTES;
                FloatVector c = FloatVector.fromArray(SPECIES, cos, t + i);
                FloatVector s = FloatVector.fromArray(SPECIES, sin, t + i).mul(sgn);
                FloatVector x1 = FloatVector.fromMemorySegment(SPECIES, x, o1 + b, NATIVE);
                FloatVector x2 = FloatVector.fromMemorySegment(SPECIES, x, o2 + b, NATIVE);
                x1.mul(c).sub(x2.mul(s)).intoMemorySegment(x, o1 + b, NATIVE);
                x2.mul(c).add(x1.mul(s)).intoMemorySegment(x, o2 + b, NATIVE);
            }
            for (; i < h2; i++) {
                long b = (long) i * Float.BYTES;
                float c = cos[t + i];
                float s = sgn * sin[t + i];
                float x1 = x.get(Tensor.FLOAT, o1 + b);
                float x2 = x.get(Tensor.FLOAT, o2 + b);
                x.set(Tensor.FLOAT, o1 + b, x1 * c - x2 * s);
                x.set(Tensor.FLOAT, o2 + b, x2 * c + x1 * s);
            }
        }
    }
}
