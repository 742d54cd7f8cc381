package org.moe4j.engine.subset;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import org.moe4j.simd.CrossEntropy;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.WorkerPool;

/**
 * Σ next-token cross-entropy of sequences packed one after another into a forward's logits (sequence j at rows
 * {@code starts[j] .. starts[j+1])}, each row's label the sequence's next token, its last row none), on the worker
 * pool with the training loss's kernel ({@link CrossEntropy#forward}: vectorised log-sum-exp in float, ~1e-6 of
 * the float64 reference {@link Evaluator#crossEntropySum} per row). Rows are summed in double in blocks of
 * {@link #BLOCK} and the blocks in order, so the result does not depend on the number of threads.
 */
final class PackedCrossEntropy implements AutoCloseable {
    static final int BLOCK = 16;
    private static final int IGNORE = -1;

    private final Arena arena = Arena.ofShared();
    private final MemorySegment targets, lse;
    private final double[] blockSums;
    private final int capacity;
    private final Task task = new Task();

    /** For forwards of at most {@code rows} rows. */
    PackedCrossEntropy(int rows) {
        capacity = rows;
        targets = arena.allocate((long) rows * Integer.BYTES, Tensor.ALIGNMENT);
        lse = arena.allocate((long) rows * Float.BYTES, Tensor.ALIGNMENT);
        blockSums = new double[(rows + BLOCK - 1) / BLOCK];
    }

    private final class Task implements WorkerPool.RangeTask {
        MemorySegment logits;
        int vocab, rows;

        @Override
        public void run(int s, int e, int worker) {
            for (int b = s; b < e; b++)
                blockSums[b] = CrossEntropy.forward(logits, 0, targets, 0, IGNORE, lse, 0, null, 0, vocab, b * BLOCK,
                        Math.min(rows, (b + 1) * BLOCK));
        }
    }

    /**
     * Σ over the label rows of sequences {@code from .. from+count-1} of {@code seqs}, packed at {@code starts} into
     * {@code logits} ([rows, vocab] from element 0; rows = starts[count]): -log softmax(logits[row])[next token].
     */
    double sum(MemorySegment logits, int vocab, List<int[]> seqs, int from, int[] starts, int count, WorkerPool pool) {
        int rows = starts[count];
        if (rows > capacity)
            throw new IllegalArgumentException(rows + " packed rows, made for at most " + capacity);
        for (int j = 0; j < count; j++) {
            int[] seq = seqs.get(from + j);
            if (starts[j + 1] - starts[j] != seq.length)
                throw new IllegalArgumentException("sequence " + (from + j) + " has " + seq.length + " tokens but "
                        + (starts[j + 1] - starts[j]) + " packed rows");
            for (int t = 0; t < seq.length; t++)
                targets.setAtIndex(ValueLayout.JAVA_INT, starts[j] + t, t + 1 < seq.length ? seq[t + 1] : IGNORE);
        }
        int blocks = (rows + BLOCK - 1) / BLOCK;
        task.logits = logits;
        task.vocab = vocab;
        task.rows = rows;
        pool.parallelFor(blocks, task);
        task.logits = null;
        double total = 0;
        for (int b = 0; b < blocks; b++) total += blockSums[b];
        return total;
    }

    /** -log softmax(logits[0])[next] for one row at element 0 (a decode step's logits), on the calling thread. */
    double row(MemorySegment logits, int vocab, int next) {
        targets.setAtIndex(ValueLayout.JAVA_INT, 0, next);
        return CrossEntropy.forward(logits, 0, targets, 0, IGNORE, lse, 0, null, 0, vocab, 0, 1);
    }

    @Override
    public void close() {
        arena.close();
    }
}
