package org.moe4j.io.safetensors;

import java.util.Map;
import org.moe4j.simd.DType;

/**
 * Where every byte of a safetensors file is (https://github.com/huggingface/safetensors, "Format"):
 *
 * <pre>
 * offset 0        u64 little-endian N: byte length of the JSON header
 * offset 8        N bytes of UTF-8 JSON: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *                                        ..., "__metadata__": {"key": "value"}}   (optional metadata, strings only)
 * offset 8 + N    the data buffer; each tensor's bytes are [begin, end) relative to this point, row-major, little-endian
 * </pre>
 *
 * moe4j pads the header with spaces so the data starts 8-byte aligned (the reference implementation does the same),
 * and accepts any header length on read, provided the header is valid UTF-8, the JSON ends where the length says
 * (only spaces may follow it), and the tensors' data_offsets tile the data buffer exactly: no gap, no overlap,
 * nothing before the first tensor or after the last.
 */
public final class SafetensorsDescriptor {
    private SafetensorsDescriptor() {
    }

    /** Offset of the u64 header length. */
    public static final long HEADER_LENGTH_OFFSET = 0;
    /** Bytes of the header length field. */
    public static final int HEADER_LENGTH_BYTES = 8;
    /** Offset of the JSON header. */
    public static final long HEADER_OFFSET = HEADER_LENGTH_OFFSET + HEADER_LENGTH_BYTES;
    /** Headers larger than this are rejected before anything is allocated (the reference implementation uses 100 MB). */
    public static final long MAX_HEADER_BYTES = 100L * 1024 * 1024;
    /** Alignment moe4j pads the data start to. */
    public static final int DATA_ALIGNMENT = 8;
    /** The reserved key of the free-form string metadata. */
    public static final String METADATA_KEY = "__metadata__";

    /** Offset of the data buffer for a header of {@code headerBytes}. */
    public static long dataStart(long headerBytes) {
        return HEADER_OFFSET + headerBytes;
    }

    private static final Map<String, DType> DTYPES = Map.of("F32", DType.F32, "BF16", DType.BF16, "F16", DType.F16);

    /** The moe4j dtype of a safetensors dtype name, or null when moe4j does not read it. */
    public static DType dtype(String name) {
        return DTYPES.get(name);
    }

    /** The safetensors dtype name of a moe4j dtype. */
    public static String name(DType dtype) {
        return switch (dtype) {
            case F32 -> "F32";
            case BF16 -> "BF16";
            case F16 -> "F16";
        };
    }
}
