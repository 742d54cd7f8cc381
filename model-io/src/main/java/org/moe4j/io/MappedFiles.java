package org.moe4j.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;

/**
 * Read-only file mappings as plain native segments: the whole file mapped into {@code arena} (which keeps the
 * mapping and unmaps it on close), handed out as an ordinary read-only native segment over the same memory.
 *
 * <p>Why not the mapped segment itself: the kernels inline the JDK's segment-access methods, whose type profiles
 * all callers share. A mapped-segment class next to the native segments of activations and scratch made those
 * profiles polymorphic, and every vector loop in the process compiled after that ran slower: weights in a mapped
 * file were read at 12-13 GB/s where the same bytes as a plain native segment read at 18, and a streaming read
 * dropped from 27 to 12-17 GB/s after them (ExpertStreamBench --mapped, alternating runs, 2026-12-07). Nothing in
 * moe4j needs the mapped segment's extras ({@code load}, {@code force}).
 */
public final class MappedFiles {
    private MappedFiles() {
    }

    /** The channel's whole file, read-only, valid while {@code arena} is open. */
    @SuppressWarnings("restricted")
    public static MemorySegment mapReadOnly(FileChannel ch, Arena arena) throws IOException {
        MemorySegment mapped = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
        return MemorySegment.ofAddress(mapped.address()).reinterpret(mapped.byteSize(), arena, null).asReadOnly();
    }
}
