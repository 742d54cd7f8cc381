package org.moe4j.engine.train;

import java.lang.foreign.MemorySegment;
import java.util.List;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.simd.Tensor;

/**
 * Cross-entropy of a model on fixed windows of a held-out split, forward only, overall and per domain.
 *
 * <p>The windows are the first {@code batches × B} of the source from data position 0, so every call (and every
 * run with the same data, T and seed) scores the same tokens. A label is the token a position predicts; its domain
 * is the shard's domain id of that token (an EOS that opens a document belongs to the document it opens). The
 * per-token CE is read off the logits: {@code ce_t = logsumexp(logits_t) - logits_t[target]}; the overall figure
 * is the transformer's own {@code stats().ce}, label-weighted over batches.
 */
public final class ValidationLoss {
    /**
     * @param ce           mean CE over all label tokens
     * @param labels       label tokens scored
     * @param domainCe     mean CE per domain id (NaN for a domain with no label)
     * @param domainLabels label tokens per domain id
     * @param domains      domain names by id
     */
    public record Result(double ce, long labels, double[] domainCe, long[] domainLabels, List<String> domains) {
        /** Perplexity exp(ce). */
        public double perplexity() {
            return StrictMath.exp(ce);
        }
    }

    private ValidationLoss() {
    }

    /**
     * Scores {@code batches} batches of {@code batch} windows of {@code val} with the transformer's current routing
     * controls (set evaluation controls first, e.g. {@code useDefaults(false, seed)}); ERC is off while it runs and
     * restored after. {@code val}'s position is reset to 0 before and left after the last window. Fewer batches are
     * scored when the split holds fewer windows than asked.
     */
    public static Result run(MoeTransformer tr, ShardBatchSource val, int batch, int batches) {
        int T = val.seqLen();
        int nb = (int) Math.max(1, Math.min(batches, val.windowsPerEpoch() / batch));
        int V = tr.config().vocab();
        int domainCount = val.domainNames().size();
        double[] sum = new double[domainCount];
        long[] count = new long[domainCount];
        int[] tokens = new int[batch * T];
        double ceSum = 0;
        long labels = 0;
        boolean erc = tr.config().loss().erc() > 0;
        tr.erc(false);
        try {
            val.position(0);
            for (int i = 0; i < nb; i++) {
                val.next(tokens, batch, T);
                int[] domains = val.lastDomains();
                tr.setBatch(tokens, batch, T);
                tr.forward();
                ceSum += tr.stats().ce * tr.stats().labels;
                labels += tr.stats().labels;
                MemorySegment logits = tr.logits().segment();
                for (int b = 0; b < batch; b++) {
                    for (int t = 0; t + 1 < T; t++) {
                        int row = b * T + t;
                        int target = tokens[row + 1];
                        double ce = logSumExp(logits, (long) row * V, V) - logits.getAtIndex(Tensor.FLOAT, (long) row * V + target);
                        sum[domains[row + 1]] += ce;
                        count[domains[row + 1]]++;
                    }
                }
            }
        } finally {
            tr.erc(erc);
        }
        double[] mean = new double[domainCount];
        for (int d = 0; d < domainCount; d++) mean[d] = count[d] == 0 ? Double.NaN : sum[d] / count[d];
        return new Result(labels == 0 ? Double.NaN : ceSum / labels, labels, mean, count, val.domainNames());
    }

    // row [V] of logits at float offset off -> log Σ exp
    private static double logSumExp(MemorySegment logits, long off, int V) {
        double max = Double.NEGATIVE_INFINITY;
        for (int v = 0; v < V; v++) max = Math.max(max, logits.getAtIndex(Tensor.FLOAT, off + v));
        double s = 0;
        for (int v = 0; v < V; v++) s += StrictMath.exp(logits.getAtIndex(Tensor.FLOAT, off + v) - max);
        return max + StrictMath.log(s);
    }
}
