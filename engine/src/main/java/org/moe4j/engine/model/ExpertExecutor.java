package org.moe4j.engine.model;

/**
 * Runs a MoE block's expert SwiGLUs over its kept slot rows, grouped by expert (the router's counting sort): the
 * block calls {@link #forward} between its gather and its combine, and {@link #backward} between its combine's
 * backward and its scatter-add. {@link #LOCAL} runs every expert in this process (one process, data parallel);
 * expert parallelism ({@code train.distributed.ExpertParallel}) sends the routed rows to the ranks owning their
 * experts and runs only its own. Installed on every layer with {@link MoeTransformer#expertExecutor}.
 */
public interface ExpertExecutor {
    /** The slots' input rows (xe) -> their outputs (ye). */
    void forward(ExpertSlots slots);

    /** dL/dye -> dL/dxe (in dye's place), adding the experts' weight gradients; after the same layer's forward. */
    void backward(ExpertSlots slots);

    /**
     * The factor on ERC's gradient into expert weights. Expert parallel: the rank count, since every rank computes
     * the same ERC gradient, the owner's copy is the only one kept and the update divides by the ranks.
     */
    default double ercExpertScale() {
        return 1;
    }

    /** Every expert of the block, here. */
    ExpertExecutor LOCAL = new ExpertExecutor() {
        @Override
        public void forward(ExpertSlots s) {
            s.forward(s.offsets(), 0, s.experts(), 0, s.xe(), s.a13(), s.act(), s.ye());
        }

        @Override
        public void backward(ExpertSlots s) {
            s.backward(s.offsets(), 0, s.experts(), 0, s.xe(), s.a13(), s.act(), s.dye(), s.dact(), s.dye());
        }
    };
}
