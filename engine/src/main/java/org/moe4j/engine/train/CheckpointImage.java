package org.moe4j.engine.train;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.MoeModel;

/**
 * What a checkpoint writes: the whole model (every expert, the checkpoint layout) and its two AdamW moments in the same
 * layout. In one process, and on a data-parallel rank, these are the live buffers ({@link #live}; closing frees
 * nothing); an expert-parallel rank holds only its own experts, so rank 0 assembles a transient copy of the whole
 * model from the ranks of its group ({@code ExpertParallel.gather}), which {@link #close()} frees.
 */
public final class CheckpointImage implements AutoCloseable {
    private final MoeModel model;
    private final MemorySegment firstMoment, secondMoment;
    private final Arena arena;

    private CheckpointImage(MoeModel model, MemorySegment m, MemorySegment v, Arena arena) {
        if (!model.layout().isWhole())
            throw new Moe4jException("checkpoint image: the model holds routed experts " + model.layout().firstExpert()
                    + ".." + (model.layout().firstExpert() + model.layout().heldExperts() - 1) + " only (an "
                    + "expert-parallel rank's); a checkpoint needs every expert (gather them first)");
        long bytes = model.layout().total() * Float.BYTES;
        if (m.byteSize() < bytes || v.byteSize() < bytes)
            throw new Moe4jException("checkpoint image: moments of " + m.byteSize() + " and " + v.byteSize()
                    + " bytes, the model's parameters take " + bytes);
        this.model = model;
        this.firstMoment = m;
        this.secondMoment = v;
        this.arena = arena;
    }

    /** The live model and optimizer of a process that holds the whole model. */
    public static CheckpointImage live(MoeModel model, AdamWOptimizer opt) {
        return new CheckpointImage(model, opt.firstMoment(), opt.secondMoment(), null);
    }

    /**
     * A whole model (no gradients) and moments of its size allocated in {@code arena}, which this image owns and
     * closes, together with the model.
     */
    public static CheckpointImage owned(MoeModel model, MemorySegment m, MemorySegment v, Arena arena) {
        return new CheckpointImage(model, m, v, arena);
    }

    public MoeModel model() {
        return model;
    }

    public MemorySegment firstMoment() {
        return firstMoment;
    }

    public MemorySegment secondMoment() {
        return secondMoment;
    }

    @Override
    public void close() {
        if (arena == null) return; // live buffers: not ours
        model.close();
        arena.close();
    }
}
