package org.moe4j.engine.train;

/** Where training batches come from: packed sequences of token ids whose documents are opened by EOS. */
public interface BatchSource {
    /** Fills tokens[0 .. batch*T) with batch sequences of T tokens; advances the position past them. */
    void next(int[] tokens, int batch, int T);

    /**
     * The data position, saved with a checkpoint for an exact resume: batches produced so far, or for a source that
     * draws sequences one by one ({@link ShardBatchSource}) sequences drawn so far.
     */
    long position();

    /** Continues from a data position that {@link #position()} returned. */
    void position(long p);

    /** One line for logs. */
    String describe();
}
