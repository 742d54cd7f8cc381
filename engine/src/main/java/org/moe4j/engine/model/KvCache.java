package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.simd.Tensor;

/**
 * The keys and values of every layer for {@code slots} sequences of up to {@code maxT} positions, after RoPE, in F32
 * or BF16 (half the memory and half the bytes a decode step reads from the cache; keys and values are rounded to
 * bf16, nearest even, as they are appended): per layer {@code keys, values [slots, kvHeads, maxT, headDim]}
 * (head-major). A generation session owns one slot; a slot is reused by the next session without clearing
 * (positions past a session's length are never read).
 */
public final class KvCache implements AutoCloseable {
    private final Arena arena = Arena.ofShared();
    private final MemorySegment[] keys, values;
    private final int slots, maxT, kw, kvHeads, headDim;
    private final boolean bf16;

    /** A cache of F32 elements, or BF16 ones when {@code bf16}. */
    public KvCache(ModelConfig c, int slots, int maxT, boolean bf16) {
        if (slots < 1 || maxT < 1 || maxT > c.maxSeq())
            throw new Moe4jException("KV cache: " + slots + " slots of " + maxT + " positions; need slots >= 1 and "
                    + "1 <= positions <= max_position_embeddings = " + c.maxSeq());
        this.slots = slots;
        this.maxT = maxT;
        this.kw = c.kvHeads() * c.headSize();
        this.kvHeads = c.kvHeads();
        this.headDim = c.headSize();
        this.bf16 = bf16;
        keys = new MemorySegment[c.layers()];
        values = new MemorySegment[c.layers()];
        long bytes = (long) slots * maxT * kw * (bf16 ? 2 : Float.BYTES);
        try {
            for (int l = 0; l < c.layers(); l++) {
                keys[l] = arena.allocate(bytes, Tensor.ALIGNMENT);
                values[l] = arena.allocate(bytes, Tensor.ALIGNMENT);
            }
        } catch (RuntimeException | OutOfMemoryError e) {
            arena.close();
            throw new Moe4jException("KV cache: cannot allocate " + 2L * c.layers() * bytes + " bytes for " + slots
                    + " slots x " + maxT + " positions", e);
        }
    }

    /** Bytes a cache of this shape takes (BF16 elements when {@code bf16}). */
    public static long bytes(ModelConfig c, int slots, int maxT, boolean bf16) {
        return 2L * c.layers() * slots * maxT * c.kvHeads() * c.headSize() * (bf16 ? 2 : Float.BYTES);
    }

    /** Whether the elements are BF16 (else F32). */
    public boolean bf16() {
        return bf16;
    }

    public int slots() {
        return slots;
    }

    public int maxPositions() {
        return maxT;
    }

    /** Element offset of (slot, KV head g, position) in a layer's keys or values ([slots, Hkv, maxT, Dh], head-major). */
    long offset(int slot, int g, int pos) {
        return org.moe4j.simd.CachedAttention.cacheOffset(slot, g, pos, maxT, kvHeads, headDim);
    }

    MemorySegment keys(int l) {
        return keys[l];
    }

    MemorySegment values(int l) {
        return values[l];
    }

    @Override
    public void close() {
        arena.close();
    }
}
