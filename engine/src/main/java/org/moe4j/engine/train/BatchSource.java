package org.moe4j.engine.train;

/** Where training batches come from: packed sequences of token ids whose documents are opened by EOS. */
public interface BatchSource {
    /** Fills tokens[0 .. batch*T) with batch sequences of T tokens; advances the position by one batch. */
    void next(int[] tokens, int batch, int T);

    /** Batches produced so far (saved with a checkpoint for an exact resume). */
    long position();

    /** Continues as if {@code p} batches had been produced. */
    void position(long p);

    /** One line for logs. */
    String describe();
}
