package org.moe4j.engine.train;

import java.io.PrintStream;
import java.util.Locale;
import org.moe4j.Moe4jException;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.StepStats;

/**
 * The training loop: per optimizer step, {@code accumulation} micro-batches of B x T tokens (forward + backward,
 * gradients summed), then AdamW with warm-up + cosine and global-norm clipping. Logs one line per {@code logEvery}
 * steps with the loss and each aux loss, tokens/s, expert load (min/max share), drops and ERC's mean epsilon. A
 * non-finite loss or gradient stops training with a {@link org.moe4j.engine.model.NonFiniteException} that names
 * the layer and tensor; the parameters are left as they were before that step's update.
 *
 * <p>Data parallel ({@link #replicas}): each rank runs this loop on its share of every global micro-batch; the
 * gradients are summed over the ranks before the update (which divides by ranks × micro-batches), and the logged
 * loss, aux losses and drops are the global ones (tokens/s: all ranks together; load min/max: this rank's).
 */
public final class Trainer {
    /** Loop settings. */
    public record Options(int batch, int seqLen, int accumulation, LrSchedule lr, double clip, int logEvery) {
        public Options {
            if (batch < 1 || seqLen < 2 || accumulation < 1 || logEvery < 1)
                throw new Moe4jException("Trainer.Options: batch " + batch + ", seqLen " + seqLen + ", accumulation "
                        + accumulation + ", logEvery " + logEvery + ": need batch >= 1, seqLen >= 2, the others >= 1");
        }
    }

    /** What one optimizer step measured (copied out of the transformer's stats, mean over micro-batches). */
    public record StepLog(long step, double loss, double ce, double lb, double z, double erc, double ercEps,
                          double lr, double gradNorm, double tokensPerSecond, double loadMin, double loadMax,
                          int drops, String kPerLayer) {
    }

    /**
     * What a data-parallel run adds to a step (the implementation: {@code train.distributed.DataParallel}). This
     * trainer is one rank's: its micro-batches are the rank's share of the global ones.
     */
    public interface Replicas {
        /** Ranks taking part (the gradients reduced below are the sum of this many ranks' gradients). */
        int ranks();

        /** Sums the gradient buffer [count floats] over the ranks, in place. */
        void reduceGradients(java.lang.foreign.MemorySegment grads, long count);

        /** Sums v[0 .. n) over the ranks, in place (the step's figures). */
        void sum(double[] v, int n);

        /** Called after optimizer step {@code step} (1-based count); checks that the ranks' weights agree. */
        void afterStep(long step);

        /**
         * The listener that starts reducing gradient ranges while the backward of a step's last micro-batch is still
         * running (then {@link #reduceGradients} reduces what is left and waits); null: everything in
         * {@link #reduceGradients}.
         */
        default MoeTransformer.GradientListener overlap() {
            return null;
        }
    }

    private final MoeTransformer model;
    private final AdamWOptimizer optimizer;
    private final BatchSource source;
    private final Options options;
    private final PrintStream log;
    private final int[] tokens;
    private Replicas replicas;
    private final double[] figures = new double[8];
    private StepListener listener;

    /** Sees each step after its update: the step's log and the stats of its last micro-batch (metrics log). */
    public interface StepListener {
        void afterStep(StepLog log, StepStats lastMicroBatch);
    }

    /** Installs (or with null removes) the step listener. */
    public void listener(StepListener l) {
        listener = l;
    }

    public Trainer(MoeTransformer model, AdamWOptimizer optimizer, BatchSource source, Options options, PrintStream log) {
        if ((long) options.batch() * options.seqLen() > model.maxTokens() || options.batch() > model.maxSequences())
            throw new Moe4jException("Trainer: batch " + options.batch() + " x " + options.seqLen()
                    + " does not fit the transformer (" + model.maxSequences() + " sequences, " + model.maxTokens() + " tokens)");
        this.model = model;
        this.optimizer = optimizer;
        fuseOptimizer(model, optimizer);
        this.source = source;
        this.options = options;
        this.log = log;
        this.tokens = new int[options.batch() * options.seqLen()];
    }

    /**
     * Sets up {@code optimizer} as a training step runs it: it zeroes the gradients as it reads them and, in BF16,
     * writes the transformer's bf16 weight copy as it updates the weights (two passes over the parameters fewer per
     * step). After each {@code optimizer.step}, call {@code tr.weightsChanged(optimizer.writesBf16Copy())}.
     */
    public static void fuseOptimizer(MoeTransformer tr, AdamWOptimizer optimizer) {
        optimizer.zeroGradients(true);
        if (tr.bf16Weights() != null) optimizer.bf16Copy(tr.bf16Weights(), tr::bf16Copied);
    }

    /** Makes this trainer one rank of a data-parallel run (null: a single process, the default). */
    public Trainer replicas(Replicas r) {
        replicas = r;
        return this;
    }

    public BatchSource source() {
        return source;
    }

    public AdamWOptimizer optimizer() {
        return optimizer;
    }

    /** Runs one optimizer step; logs it when its index is a multiple of logEvery (or it is the first). */
    public StepLog step() {
        long t0 = System.nanoTime();
        long s = optimizer.stepCount();
        model.zeroGrads();
        double loss = 0, ce = 0, lb = 0, z = 0, erc = 0, eps = 0, lmin = 1, lmax = 0;
        int drops = 0;
        int acc = options.accumulation();
        for (int i = 0; i < acc; i++) {
            source.next(tokens, options.batch(), options.seqLen());
            model.setBatch(tokens, options.batch(), options.seqLen());
            loss += model.forward();
            // the last micro-batch's backward completes the gradients layer by layer: replicas may start reducing them
            MoeTransformer.GradientListener overlap = replicas != null && i == acc - 1 ? replicas.overlap() : null;
            model.gradientListener(overlap);
            try {
                model.backward();
            } finally {
                if (overlap != null) model.gradientListener(null);
            }
            StepStats st = model.stats();
            ce += st.ce;
            lb += st.lbMean;
            z += st.zMean;
            erc += st.ercMean;
            double e = 0;
            for (int l = 0; l < st.layers(); l++) {
                e += st.ercEps[l];
                lmin = Math.min(lmin, st.loadMin[l]);
                lmax = Math.max(lmax, st.loadMax[l]);
            }
            eps += e / st.layers();
            drops += st.totalDrops();
        }
        double lr = options.lr().at(s);
        int ranks = 1;
        if (replicas != null) {
            // the mean over ranks of each rank's (mean over its micro-batches) = the global batch's gradient
            replicas.reduceGradients(model.model().grads(), model.model().layout().total());
            ranks = replicas.ranks();
        }
        double norm = optimizer.step(lr, options.clip(), acc * ranks);
        model.weightsChanged(optimizer.writesBf16Copy());
        double secs = (System.nanoTime() - t0) * 1e-9;
        double tokens = (double) acc * options.batch() * options.seqLen();
        if (replicas != null) {
            double[] f = figures;
            f[0] = loss; f[1] = ce; f[2] = lb; f[3] = z; f[4] = erc; f[5] = eps; f[6] = drops; f[7] = tokens / secs;
            replicas.sum(f, 8); // load min/max stay this rank's
            loss = f[0] / ranks; ce = f[1] / ranks; lb = f[2] / ranks; z = f[3] / ranks; erc = f[4] / ranks;
            eps = f[5] / ranks; drops = (int) f[6];
            tokens = f[7] * secs; // the ranks' rates summed: the global rate
            replicas.afterStep(s + 1);
        }
        StepStats st = model.stats();
        StringBuilder ks = new StringBuilder();
        for (int l = 0; l < st.layers(); l++) ks.append(l == 0 ? "" : ",").append(st.kRouted[l]);
        StepLog out = new StepLog(s, loss / acc, ce / acc, lb / acc, z / acc, erc / acc, eps / acc, lr, norm,
                tokens / secs, lmin, lmax, drops, ks.toString());
        if (log != null && (s % options.logEvery() == 0 || s + 1 == options.lr().total())) log.println(format(out));
        if (listener != null) listener.afterStep(out, st);
        return out;
    }

    public static String format(StepLog l) {
        return String.format(Locale.ROOT,
                "step %5d  loss %.4f  ce %.4f  lb %.4f  z %.4f  erc %s  eps %s  lr %.2e  |g| %.3f  %,.0f tok/s  load %.3f-%.3f  drops %d  k %s",
                l.step(), l.loss(), l.ce(), l.lb(), l.z(), Double.isNaN(l.erc()) ? "off" : String.format(Locale.ROOT, "%.4f", l.erc()),
                Double.isNaN(l.ercEps()) ? "-" : String.format(Locale.ROOT, "%.3f", l.ercEps()), l.lr(), l.gradNorm(),
                l.tokensPerSecond(), l.loadMin(), l.loadMax(), l.drops(), l.kPerLayer());
    }
}
