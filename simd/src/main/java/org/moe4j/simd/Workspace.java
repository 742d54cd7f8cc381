package org.moe4j.simd;

import java.lang.foreign.Arena;
import java.util.LinkedHashMap;
import java.util.Map;
import org.moe4j.Moe4jException;

/**
 * Named buffers allocated once from one arena and handed out as {@link Tensor} views. Everything a step needs
 * is allocated when the workspace is built; a step then only looks its views up (once) and reuses them.
 * {@link #close()} frees every buffer at once; using a view after that fails with an IllegalStateException.
 */
public final class Workspace implements AutoCloseable {
    private final Arena arena;
    private final Map<String, Tensor> slots = new LinkedHashMap<>();
    private long bytes;

    public Workspace() {
        this(Arena.ofShared());
    }

    /** A workspace over an arena it now owns (closed with it). */
    public Workspace(Arena arena) {
        this.arena = arena;
    }

    /** Allocates a zeroed float32 slot {@code name}; a name can be taken once. */
    public Tensor allocate(String name, int... shape) {
        return allocate(name, DType.F32, shape);
    }

    /** Allocates a zeroed slot {@code name} of the given dtype; a name can be taken once. */
    public Tensor allocate(String name, DType dtype, int... shape) {
        if (slots.containsKey(name)) {
            throw new Moe4jException("workspace slot '" + name + "' is already allocated as " + slots.get(name));
        }
        Tensor t = Tensor.allocate(arena, dtype, shape);
        slots.put(name, t);
        bytes += t.byteSize();
        return t;
    }

    /** The slot called {@code name}. */
    public Tensor get(String name) {
        Tensor t = slots.get(name);
        if (t == null) {
            throw new Moe4jException("workspace has no slot '" + name + "'; it has " + slots.keySet());
        }
        return t;
    }

    public boolean has(String name) {
        return slots.containsKey(name);
    }

    /** Bytes held by all slots. */
    public long byteSize() {
        return bytes;
    }

    public Arena arena() {
        return arena;
    }

    @Override
    public void close() {
        slots.clear();
        arena.close();
    }
}
