package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;

/**
 * What an {@link ExpertExecutor} sees of one layer's MoE block: the kept slot rows of its last forward, grouped by
 * expert ({@link #offsets()}: rows offsets[e] .. offsets[e+1] of expert e; routed experts 0 .. routed-1, then the
 * shared ones), the block's slot buffers, and the block's expert GEMMs over any such grouped rows.
 */
public final class ExpertSlots {
    private final MoeBlock block;
    private final BlockContext x;

    ExpertSlots(MoeBlock block, BlockContext x) {
        this.block = block;
        this.x = x;
    }

    public int layer() {
        return block.l;
    }

    /** Experts of the block's layer, routed and shared (E_l). */
    public int experts() {
        return block.E;
    }

    /** The layer's routed experts (E_l'), the ones an executor may place elsewhere. */
    public int routed() {
        return block.routed;
    }

    public int d() {
        return x.d;
    }

    public int hidden() {
        return x.hid;
    }

    /**
     * ERC reads the W1 [h, d] of routed expert {@code expert}, which this process does not hold (an expert-parallel
     * rank's layout), at element {@code offset} of {@code store}; the caller keeps it current (ERC's gradient into it is
     * dropped here: its owner computes its own).
     */
    public void w1From(int expert, MemorySegment store, long offset) {
        block.w1From(expert, store, offset);
    }

    /** Whether this process holds expert j's weights (false: another expert-parallel rank's routed expert). */
    public boolean holds(int j) {
        return block.w13[j] >= 0;
    }

    /** The most slot rows one forward holds (maxTokens x (k' + s)). */
    public int maxSlots() {
        return x.slots();
    }

    /** offsets[0 .. E]: the routing's rows per expert, from the last forward. */
    public int[] offsets() {
        return block.a.routing.offsets;
    }

    /** Expert input rows [slots, d]. */
    public MemorySegment xe() {
        return block.a.xe.segment();
    }

    /** [W1 x | W3 x] rows [slots, 2h] (saved for the backward). */
    public MemorySegment a13() {
        return block.a.a13.segment();
    }

    /** silu(W1 x) * W3 x rows [slots, h] (saved for the backward). */
    public MemorySegment act() {
        return block.a.act.segment();
    }

    /** Expert output rows [slots, d]. */
    public MemorySegment ye() {
        return block.a.ye.segment();
    }

    /** dL/dye rows [slots, d] on entry to the backward; dL/dxe rows on return. */
    public MemorySegment dye() {
        return x.dye.segment();
    }

    /** Backward scratch [slots, h]. */
    public MemorySegment dact() {
        return x.dact.segment();
    }

    /**
     * Experts base+from .. base+to-1 over rows offsets[i] .. offsets[i+1] of xe [rows, d] -> ye [rows, d], keeping
     * a13 [rows, 2h] and act [rows, h] for {@link #backward}.
     */
    public void forward(int[] offsets, int from, int to, int base, MemorySegment xe, MemorySegment a13,
                        MemorySegment act, MemorySegment ye) {
        block.runExperts(offsets, from, to, base, xe, a13, act, ye);
    }

    /**
     * The backward of {@link #forward} over the same rows and buffers: dye [rows, d] -> dxe [rows, d] (may be dye),
     * adding the experts' weight gradients; dact [rows, h] is scratch, a13 is overwritten.
     */
    public void backward(int[] offsets, int from, int to, int base, MemorySegment xe, MemorySegment a13,
                         MemorySegment act, MemorySegment dye, MemorySegment dact, MemorySegment dxe) {
        block.runExpertsBackward(offsets, from, to, base, xe, a13, act, dye, dact, dxe);
    }
}
