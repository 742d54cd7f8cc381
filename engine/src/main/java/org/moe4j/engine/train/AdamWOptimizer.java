package org.moe4j.engine.train;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.NonFiniteException;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.simd.AdamW;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;
import org.moe4j.simd.WorkerPool;

/**
 * AdamW over the model's flat parameter buffer (ALGORITHMS.md section 4): β (0.9, 0.95), weight decay 0.1 on
 * matrices only (none on embeddings and norms), global gradient-norm clipping. The moments live off-heap in the
 * parameter layout. The buffer is cut once into chunks that never straddle two tensors, so a step is one parallel
 * loop with no allocation.
 */
public final class AdamWOptimizer implements AutoCloseable {
    private static final int CHUNK = 1 << 16;

    private final MoeModel model;
    private final WorkerPool pool;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment m, v;
    private final long[] chunkStart;
    private final int[] chunkLen;
    private final boolean[] chunkDecay;
    /** Each chunk's tensor (its index in the layout's entries): a chunk never straddles two. */
    private final int[] chunkTensor;
    private final double[] chunkSquares; // Σ g² of each chunk, summed in chunk order: the same bits on any thread count
    /** Per chunk, expert parallel: false every rank's alike (dense), true this rank's alone (its own experts). */
    private boolean[] chunkSplit;
    private Partition partition;
    /** Zero each gradient as the step reads it ({@link #zeroGradients}). */
    private boolean zeroGrads;
    /** BF16 training's copy of the weights the step writes as it updates them ({@link #bf16Copy}); else null. */
    private MemorySegment w16;
    private boolean[] chunkW16;
    private final MemorySegment params, grads;
    private double beta1 = 0.9, beta2 = 0.95, epsilon = 1e-8, weightDecay = 0.1;
    private long step;
    private double lastNorm;

    public AdamWOptimizer(MoeModel model, WorkerPool pool) {
        this.model = model;
        this.pool = pool;
        // taken once: the step must not drop the model's zero mark by taking the buffer again (MoeModel.grads())
        params = model.params();
        grads = model.grads();
        long bytes = model.layout().total() * Float.BYTES;
        m = arena.allocate(bytes, Tensor.ALIGNMENT);
        v = arena.allocate(bytes, Tensor.ALIGNMENT);
        List<long[]> chunks = new ArrayList<>();
        List<ParamLayout.Entry> entries = model.layout().entries();
        for (int t = 0; t < entries.size(); t++) {
            ParamLayout.Entry e = entries.get(t);
            for (long a = 0; a < e.numel(); a += CHUNK)
                chunks.add(new long[] {e.offset() + a, Math.min(CHUNK, e.numel() - a), t});
        }
        chunkStart = new long[chunks.size()];
        chunkLen = new int[chunks.size()];
        chunkDecay = new boolean[chunks.size()];
        chunkTensor = new int[chunks.size()];
        for (int i = 0; i < chunks.size(); i++) {
            chunkStart[i] = chunks.get(i)[0];
            chunkLen[i] = (int) chunks.get(i)[1];
            chunkTensor[i] = (int) chunks.get(i)[2];
            chunkDecay[i] = entries.get(chunkTensor[i]).decay();
        }
        chunkSquares = new double[chunks.size()];
    }

    /**
     * Expert parallel: some tensors (the routed experts) are split over the ranks, each held and updated by its owner
     * alone, whose gradient for them is complete; the others (dense) are updated by every rank from the same gradient.
     */
    public interface Partition {
        /** Whether the tensor at element offset {@code offset} is one of this rank's split tensors (its experts). */
        boolean split(long offset);

        /** {@code v} summed over the ranks; the same bits on every rank (collective). */
        double sumOverRanks(double v);
    }

    /**
     * Makes this optimizer one rank's part of an expert-parallel update (null: a single process or data parallel, the
     * default): the global gradient norm is the dense squares plus the split tensors' squares summed over the ranks.
     */
    public AdamWOptimizer partition(Partition p) {
        partition = p;
        chunkSplit = null;
        if (p != null) {
            chunkSplit = new boolean[chunkStart.length];
            for (int i = 0; i < chunkStart.length; i++) chunkSplit[i] = p.split(chunkStart[i]);
        }
        return this;
    }

    /**
     * Whether each step zeroes the gradients as it reads them (and marks the model's gradients zero, so the next
     * {@code zeroGrads} is skipped): one pass over the gradient buffer fewer per step (452 MB in the bench config).
     * Off by default: the gradients are then still there after the step.
     */
    public AdamWOptimizer zeroGradients(boolean on) {
        zeroGrads = on;
        return this;
    }

    /**
     * BF16 training: each step also writes bf16(p) into {@code w16} (element offsets as the parameters') for the
     * tensors {@code copied} names, while it updates them; the runner's copy is then current without a pass of its
     * own. Null: none (the default).
     */
    public AdamWOptimizer bf16Copy(MemorySegment w16, java.util.function.Predicate<ParamLayout.Entry> copied) {
        this.w16 = w16;
        chunkW16 = null;
        if (w16 != null) {
            List<ParamLayout.Entry> entries = model.layout().entries();
            chunkW16 = new boolean[chunkStart.length];
            for (int i = 0; i < chunkStart.length; i++) chunkW16[i] = copied.test(entries.get(chunkTensor[i]));
        }
        return this;
    }

    /** Whether the last {@link #step} wrote the bf16 copy of {@link #bf16Copy}. */
    public boolean writesBf16Copy() {
        return w16 != null;
    }

    public AdamWOptimizer betas(double b1, double b2) {
        beta1 = b1;
        beta2 = b2;
        return this;
    }

    public AdamWOptimizer weightDecay(double wd) {
        weightDecay = wd;
        return this;
    }

    public long stepCount() {
        return step;
    }

    /** Restores the step counter (resume). */
    public void stepCount(long s) {
        step = s;
    }

    /** The first moment buffer (for checkpoints). */
    public MemorySegment firstMoment() {
        return m;
    }

    public MemorySegment secondMoment() {
        return v;
    }

    /** The global gradient norm measured by the last {@link #step}, before clipping. */
    public double lastGradNorm() {
        return lastNorm;
    }

    private final class NormTask implements WorkerPool.RangeTask {
        @Override
        public void run(int s, int e, int worker) {
            for (int i = s; i < e; i++) chunkSquares[i] = AdamW.sumSquares(grads, chunkStart[i], chunkLen[i]);
        }
    }

    private final NormTask normTask = new NormTask();

    private final class StepTask implements WorkerPool.RangeTask {
        float lr, bc1, bc2, scale;

        @Override
        public void run(int s, int e, int worker) {
            MemorySegment p = params, g = grads;
            boolean zero = zeroGrads;
            for (int i = s; i < e; i++) {
                long o = chunkStart[i];
                AdamW.step(p, o, g, o, m, o, v, o, chunkLen[i], lr, (float) beta1, (float) beta2, (float) epsilon,
                        chunkDecay[i] ? (float) weightDecay : 0f, bc1, bc2, scale, zero,
                        chunkW16 != null && chunkW16[i] ? w16 : null, o);
            }
        }
    }

    private final StepTask stepTask = new StepTask();

    /**
     * One update from the gradients (which hold the SUM over {@code microBatches} micro-batch means): they are
     * averaged, clipped to global norm {@code clip} (0 = no clipping), and applied with learning rate lr.
     * Returns the gradient norm before clipping. A non-finite norm names the first bad tensor and changes nothing.
     */
    public double step(double lr, double clip, int microBatches) {
        pool.parallelFor(chunkStart.length, normTask);
        double ss = 0;
        if (partition == null) {
            for (double x : chunkSquares) ss += x;
        } else { // the dense chunks, the same on every rank, plus the owners' split ones summed over the ranks
            double own = 0;
            for (int i = 0; i < chunkSquares.length; i++) {
                if (chunkSplit[i]) own += chunkSquares[i];
                else ss += chunkSquares[i];
            }
            ss += partition.sumOverRanks(own);
        }
        double norm = Math.sqrt(ss) / microBatches;
        lastNorm = norm;
        if (!Double.isFinite(norm)) {
            for (ParamLayout.Entry e : model.layout().entries()) {
                long at = VectorOps.firstNonFinite(grads, e.offset(), e.numel());
                if (at >= 0)
                    throw new NonFiniteException("non-finite gradient: first in " + e.name() + " at element " + at
                            + "; no parameter was updated");
            }
            // not reached: the squares of finite floats, summed in double, stay below ~1e77 per element
            throw new NonFiniteException("non-finite gradient norm " + norm + " although every gradient is finite; "
                    + "no parameter was updated");
        }
        double scale = 1.0 / microBatches;
        if (clip > 0 && norm > clip) scale *= clip / norm;
        step++;
        StepTask t = stepTask;
        t.lr = (float) lr;
        t.bc1 = (float) (1 - powSteps(beta1, step));
        t.bc2 = (float) (1 - powSteps(beta2, step));
        t.scale = (float) scale;
        pool.parallelFor(chunkStart.length, t);
        // every gradient element lies in a chunk (chunks cover every tensor; the layout leaves no gaps)
        if (zeroGrads) model.markGradsZero();
        return norm;
    }

    /**
     * b^t by squaring: a function of (b, t) alone, so a resumed run gets the same bias corrections as one that never
     * stopped, within a few ulps of {@code StrictMath.pow} (which the float cast hides), and allocation-free from the
     * first call ({@code StrictMath.pow} allocates scratch arrays until C2 compiles it: 192 B per step for the
     * first ~2,600 steps of a run).
     */
    static double powSteps(double b, long t) {
        double r = 1, x = b;
        for (long e = t; e > 0; e >>>= 1) {
            if ((e & 1) != 0) r *= x;
            x *= x;
        }
        return r;
    }

    @Override
    public void close() {
        arena.close();
    }
}
