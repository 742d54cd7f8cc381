package org.moe4j.simd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import org.moe4j.Moe4jException;

/**
 * An off-heap, row-major view with a shape over a {@link MemorySegment}. The tensor does not own its memory:
 * the arena that allocated the segment (a {@link Workspace}, a model's parameter arena, a mapped file) does.
 *
 * <p>Element accessors convert on the fly for {@link DType#BF16} and {@link DType#F16}; kernels read the
 * segment directly. Creating views allocates a small Java object, so hot paths take their views once, up front.
 */
public final class Tensor {
    /** Native-order float, unaligned so that views into mapped files at any offset work. */
    public static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Native-order short for bf16/f16 storage. */
    public static final ValueLayout.OfShort SHORT = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Alignment of every buffer moe4j allocates: one cache line, one AVX-512 vector. */
    public static final long ALIGNMENT = 64;

    private final MemorySegment segment;
    private final DType dtype;
    private final int[] shape;
    private final long numel;

    private Tensor(MemorySegment segment, DType dtype, int[] shape, long numel) {
        this.segment = segment;
        this.dtype = dtype;
        this.shape = shape;
        this.numel = numel;
    }

    /** A view of {@code segment} (which must hold exactly or at least the elements) with the given shape. */
    public static Tensor of(MemorySegment segment, DType dtype, int... shape) {
        long n = numel(shape);
        long bytes = n * dtype.byteSize();
        if (segment.byteSize() < bytes) {
            throw new Moe4jException("segment of " + segment.byteSize() + " bytes is too small for "
                    + dtype + Arrays.toString(shape) + " (" + bytes + " bytes)");
        }
        return new Tensor(segment.asSlice(0, bytes), dtype, shape.clone(), n);
    }

    /** A fresh, zeroed float32 tensor allocated from {@code arena}. */
    public static Tensor allocate(Arena arena, int... shape) {
        return allocate(arena, DType.F32, shape);
    }

    /** A fresh, zeroed tensor allocated from {@code arena}, 64-byte aligned. */
    public static Tensor allocate(Arena arena, DType dtype, int... shape) {
        long n = numel(shape);
        MemorySegment seg = arena.allocate(Math.max(1, n * dtype.byteSize()), ALIGNMENT);
        return new Tensor(seg.asSlice(0, n * dtype.byteSize()), dtype, shape.clone(), n);
    }

    /** Product of the dimensions; rejects negative ones. */
    public static long numel(int... shape) {
        long n = 1;
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] < 0) {
                throw new Moe4jException("negative dimension " + shape[i] + " at index " + i + " in shape "
                        + Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, shape[i]);
        }
        return n;
    }

    public MemorySegment segment() {
        return segment;
    }

    public DType dtype() {
        return dtype;
    }

    public int rank() {
        return shape.length;
    }

    public int dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    /** A copy of the shape. */
    public int[] shape() {
        return shape.clone();
    }

    public long numel() {
        return numel;
    }

    public long byteSize() {
        return numel * dtype.byteSize();
    }

    /** Elements per index of the leading dimension (the row length of a 2-D tensor). */
    public long rowStride() {
        return shape.length == 0 ? 1 : numel / Math.max(1, shape[0]) ;
    }

    /** Element {@code i} in flat row-major order, as float. */
    public float get(long i) {
        return switch (dtype) {
            case F32 -> segment.getAtIndex(FLOAT, i);
            case BF16 -> Bf16.toFloat(segment.getAtIndex(SHORT, i));
            case F16 -> Float.float16ToFloat(segment.getAtIndex(SHORT, i));
        };
    }

    /** Sets element {@code i} in flat row-major order, rounding to nearest-even for bf16/f16. */
    public void set(long i, float v) {
        switch (dtype) {
            case F32 -> segment.setAtIndex(FLOAT, i, v);
            case BF16 -> segment.setAtIndex(SHORT, i, Bf16.fromFloat(v));
            case F16 -> segment.setAtIndex(SHORT, i, Float.floatToFloat16(v));
        }
    }

    /** Element [r, c] of a 2-D tensor. */
    public float get(int r, int c) {
        return get((long) r * shape[1] + c);
    }

    /** Sets element [r, c] of a 2-D tensor. */
    public void set(int r, int c, float v) {
        set((long) r * shape[1] + c, v);
    }

    /** A view of {@code count} entries of the leading dimension starting at {@code start}. */
    public Tensor rows(int start, int count) {
        if (shape.length == 0 || start < 0 || count < 0 || start + (long) count > shape[0]) {
            throw new IndexOutOfBoundsException("rows(" + start + ", " + count + ") of shape " + Arrays.toString(shape));
        }
        int[] s = shape.clone();
        s[0] = count;
        long stride = rowStride() * dtype.byteSize();
        return new Tensor(segment.asSlice(start * stride, count * stride), dtype, s, count * rowStride());
    }

    /** The same memory with another shape of the same element count. */
    public Tensor reshape(int... newShape) {
        if (numel(newShape) != numel) {
            throw new Moe4jException("cannot reshape " + Arrays.toString(shape) + " to " + Arrays.toString(newShape));
        }
        return new Tensor(segment, dtype, newShape.clone(), numel);
    }

    public Tensor fill(float v) {
        if (dtype == DType.F32 && v == 0f) {
            segment.fill((byte) 0);
        } else {
            for (long i = 0; i < numel; i++) {
                set(i, v);
            }
        }
        return this;
    }

    public Tensor zero() {
        segment.fill((byte) 0);
        return this;
    }

    /** Copies {@code src} (row-major, converted to this dtype) into this tensor. */
    public Tensor copyFrom(float[] src) {
        if (src.length != numel) {
            throw new Moe4jException("copyFrom: " + src.length + " values for a tensor of " + numel);
        }
        if (dtype == DType.F32) {
            MemorySegment.copy(src, 0, segment, FLOAT, 0, src.length);
        } else {
            for (int i = 0; i < src.length; i++) {
                set(i, src[i]);
            }
        }
        return this;
    }

    /** Copies another tensor of the same element count, converting dtype if needed. */
    public Tensor copyFrom(Tensor src) {
        if (src.numel != numel) {
            throw new Moe4jException("copyFrom: " + Arrays.toString(src.shape) + " into " + Arrays.toString(shape));
        }
        if (src.dtype == dtype) {
            segment.copyFrom(src.segment);
        } else {
            for (long i = 0; i < numel; i++) {
                set(i, src.get(i));
            }
        }
        return this;
    }

    /** The values as a new float array (for tests and small tensors). */
    public float[] toFloatArray() {
        if (numel > Integer.MAX_VALUE - 8) {
            throw new Moe4jException("tensor of " + numel + " elements does not fit a Java array");
        }
        float[] out = new float[(int) numel];
        if (dtype == DType.F32) {
            MemorySegment.copy(segment, FLOAT, 0, out, 0, out.length);
        } else {
            for (int i = 0; i < out.length; i++) {
                out[i] = get(i);
            }
        }
        return out;
    }

    @Override
    public String toString() {
        return "Tensor" + dtype + Arrays.toString(shape);
    }
}
