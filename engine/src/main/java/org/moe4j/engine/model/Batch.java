package org.moe4j.engine.model;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;

/**
 * The token rows of one forward pass: {@code B} packed sequences, rows {@code seqStart[i] .. seqStart[i+1])} each,
 * with each row's position, document id and next-token label. Training sequences start at position 0; an inference
 * sequence continues at position {@code firstPos[i]} of KV-cache slot {@code slot[i]} (its labels are absent).
 * Buffers are sized once for (maxTokens, maxSequences); setting a batch allocates nothing.
 */
public final class Batch {
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT;

    private final ModelConfig c;
    final int maxN, maxSeqs;
    /** Rows, sequences, and the common sequence length (0 when the sequences differ in length or continue a cache). */
    int N, B, seqLen;
    final int[] tokens, seqStart, posOfRow, slotOfRow, targets, slot, firstPos;
    private final int[] uniformStarts;
    final MemorySegment idSeg, targetSeg, docSeg;
    /** True when the batch continues KV-cache sequences (inference). */
    boolean cached;

    Batch(ModelConfig c, int maxTokens, int maxSequences, Arena arena) {
        if (maxTokens < 1 || maxSequences < 1 || maxSequences > maxTokens)
            throw new Moe4jException("batch: maxTokens = " + maxTokens + ", maxSequences = " + maxSequences
                    + ": need 1 <= maxSequences <= maxTokens");
        this.c = c;
        maxN = maxTokens;
        maxSeqs = maxSequences;
        tokens = new int[maxN];
        posOfRow = new int[maxN];
        slotOfRow = new int[maxN];
        targets = new int[maxN];
        seqStart = new int[maxSequences + 1];
        uniformStarts = new int[maxSequences + 1];
        slot = new int[maxSequences];
        firstPos = new int[maxSequences];
        idSeg = arena.allocate(maxN * 4L, 64);
        targetSeg = arena.allocate(maxN * 4L, 64);
        docSeg = arena.allocate(maxN * 4L, 64);
    }

    /** Rows of the batch. */
    public int rows() {
        return N;
    }

    public int sequences() {
        return B;
    }

    /** Training: sequences start at position 0 and are labelled with their next tokens (see {@link #set(int[], int[], int[], int[], int, boolean)}). */
    void set(int[] tokenIds, int[] starts, int sequences) {
        set(tokenIds, starts, null, null, sequences, false);
    }

    /** B sequences of T tokens each from tokens [B*T]. */
    void setUniform(int[] tokenIds, int batch, int T) {
        if (batch < 1 || batch > maxSeqs)
            throw new Moe4jException("batch: " + batch + " sequences, this transformer takes 1.." + maxSeqs);
        for (int i = 0; i <= batch; i++) uniformStarts[i] = i * T;
        set(tokenIds, uniformStarts, batch);
    }

    /**
     * Sets {@code sequences} packed sequences, tokens[starts[i] .. starts[i+1]) each (ids in [0, vocab); an EOS opens
     * a document). With {@code cached}, sequence i continues KV-cache slot {@code slots[i]} at position
     * {@code first[i]} and has no labels; without, it starts at position 0 and row t is labelled with row t+1.
     */
    void set(int[] tokenIds, int[] starts, int[] first, int[] slots, int sequences, boolean cached) {
        if (sequences < 1 || sequences > maxSeqs)
            throw new Moe4jException("batch: " + sequences + " sequences, this transformer takes 1.." + maxSeqs);
        int n = starts[sequences];
        if (starts[0] != 0 || n > maxN)
            throw new Moe4jException("batch: " + n + " tokens, this transformer takes at most " + maxN);
        int len = starts[1] - starts[0];
        boolean uniform = !cached;
        for (int i = 0; i < sequences; i++) {
            int li = starts[i + 1] - starts[i];
            if (li < 1) throw new Moe4jException("batch: sequence " + i + " is empty");
            int p0 = cached ? first[i] : 0;
            if (p0 < 0 || p0 + li > c.maxSeq())
                throw new Moe4jException("batch: sequence " + i + " would reach position " + (p0 + li)
                        + ", maxSeq is " + c.maxSeq());
            uniform &= li == len;
        }
        int doc = -1;
        for (int i = 0; i < sequences; i++) {
            int p0 = cached ? first[i] : 0;
            for (int t = starts[i]; t < starts[i + 1]; t++) {
                int id = tokenIds[t];
                if (id < 0 || id >= c.vocab())
                    throw new Moe4jException("batch: token " + id + " at sequence " + i + ", position "
                            + (p0 + t - starts[i]) + " is outside the vocabulary [0, " + c.vocab() + ")");
                tokens[t] = id;
                posOfRow[t] = p0 + t - starts[i];
                slotOfRow[t] = cached ? slots[i] : 0;
                if (t == starts[i] || id == c.eosId()) doc++;
                docSeg.setAtIndex(INT, t, doc);
                idSeg.setAtIndex(INT, t, id);
                targets[t] = !cached && t + 1 < starts[i + 1] ? tokenIds[t + 1] : -1;
                targetSeg.setAtIndex(INT, t, targets[t]);
            }
            if (cached) {
                slot[i] = slots[i];
                firstPos[i] = p0;
            } else {
                firstPos[i] = 0;
            }
        }
        System.arraycopy(starts, 0, seqStart, 0, sequences + 1);
        N = n;
        B = sequences;
        seqLen = uniform ? len : 0;
        this.cached = cached;
    }
}
