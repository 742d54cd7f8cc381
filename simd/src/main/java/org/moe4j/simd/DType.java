package org.moe4j.simd;

/** Element types a {@link Tensor} can be stored in. Compute is always float32; bf16/f16 are storage types. */
public enum DType {
    F32(4),
    BF16(2),
    F16(2);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }
}
