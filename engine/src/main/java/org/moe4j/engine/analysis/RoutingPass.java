package org.moe4j.engine.analysis;

import java.util.function.LongConsumer;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.ForwardRunner;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.routing.Routing;
import org.moe4j.io.corpus.TokenShard;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/**
 * Routes windows of a token shard through the forward-only model and hands each layer's {@link Routing} to the
 * statistics. Windows are {@code seq} tokens, spread evenly over the shard (window i starts at
 * i * (N - seq) / (windows - 1)), each its own sequence starting at position 0; {@code batch} windows per call.
 */
public final class RoutingPass {
    /** What a pass feeds; any part may be null. */
    public static final class Sinks {
        /** Per layer: token-id and position tables, domain x expert usage, drops by position. */
        public ExpertCounts[] byId, byPosition;
        public DomainExpertUsage[] usage;
        public DropsByPosition[] drops;
        /** Cluster features: every clusterEvery-th window's tokens, [rows, L*E'] (routed softmax side by side). */
        public float[] features;
        public int[] featureDomain, featureDocument, featureToken;
        public int clusterEvery = 1, featureRows, featureDocuments;
    }

    private final ModelConfig c;
    private final TokenShard shard;
    private final int seq, windows, batch;

    public RoutingPass(ModelConfig c, TokenShard shard, int seq, long tokens, int batch) {
        this.c = c;
        this.shard = shard;
        if (seq < 2 || seq > c.maxSeq())
            throw new Moe4jException("analyze: window of " + seq + " tokens; the model takes 2.." + c.maxSeq());
        if (shard.tokenCount() < seq)
            throw new Moe4jException(shard.path() + ": holds " + shard.tokenCount() + " tokens, fewer than one window of " + seq);
        if (shard.vocabSize() > c.vocab())
            throw new Moe4jException(shard.path() + ": vocabulary " + shard.vocabSize() + " is larger than the model's " + c.vocab());
        this.seq = seq;
        this.windows = (int) Math.max(1, Math.min(tokens / seq, shard.tokenCount() / seq));
        this.batch = Math.max(1, Math.min(batch, windows));
    }

    public int windows() {
        return windows;
    }

    public int seq() {
        return seq;
    }

    public long tokens() {
        return (long) windows * seq;
    }

    long windowStart(int i) {
        return windows == 1 ? 0 : (long) ((double) i * (shard.tokenCount() - seq) / (windows - 1));
    }

    /**
     * Routes the first {@code count} windows (every stride-th window, so that a shorter pass still spans the shard)
     * with capacity factor cf (0 = none) and feeds {@code s}; {@code progress} gets the tokens of each call.
     */
    public void run(ModelWeights weights, Gemm gemm, WorkerPool pool, int count, double cf, Sinks s, LongConsumer progress) {
        // the analyses put every layer's experts side by side (L x E' tables, L·E' features): one E' for all
        if (c.layerExperts() != null)
            throw new org.moe4j.Moe4jException("analyze: the checkpoint keeps a different number of experts per layer "
                    + c.layerExperts() + " (a pruned checkpoint); the routing analyses need one expert count for every "
                    + "layer: analyze the source checkpoint");
        int L = c.layers(), E = c.routedExperts();
        int n = Math.max(1, Math.min(count, windows));
        int stride = windows / n;
        int rows = batch * seq;
        int[] ids = new int[rows], starts = new int[batch + 1], first = new int[batch], slots = new int[batch];
        int[] pos = new int[rows], dom = new int[rows], doc = new int[rows], scratch = new int[rows];
        int[] featRow = new int[rows];
        long[] docs = new long[seq];
        for (int i = 0; i < rows; i++) pos[i] = i % seq;
        for (int i = 0; i < batch; i++) slots[i] = i;
        try (ForwardRunner f = new ForwardRunner(weights, rows, batch, seq, c.routedK(), false, gemm, pool)) {
            for (int l = 0; l < L; l++) f.control(l).capacityFactor(cf);
            f.observer((l, r, ye) -> {
                int T = r.tokens();
                if (s.byId != null) s.byId[l].add(ids, T, r.expert, r.kTot(), r.kRouted());
                if (s.byPosition != null) s.byPosition[l].add(pos, T, r.expert, r.kTot(), r.kRouted());
                if (s.usage != null) s.usage[l].add(dom, T, r.prob, r.experts(), r.expert, r.kTot(), r.kRouted());
                if (s.drops != null) s.drops[l].add(r, scratch);
                if (s.features != null)
                    for (int t = 0; t < T; t++) {
                        int fr = featRow[t];
                        if (fr < 0) continue;
                        System.arraycopy(r.prob, t * r.experts(), s.features, (fr * L + l) * E, E);
                    }
            });
            for (int w0 = 0; w0 < n; w0 += batch) {
                int B = Math.min(batch, n - w0);
                for (int b = 0; b < B; b++) {
                    int w = (w0 + b) * stride;
                    long at = windowStart(w);
                    shard.read(at, ids, b * seq, seq);
                    shard.readDocuments(at, seq, docs, null);
                    for (int t = 0; t < seq; t++) dom[b * seq + t] = shard.documentDomain(docs[t]);
                    boolean clustered = s.features != null && w % s.clusterEvery == 0
                            && s.featureRows + seq <= s.features.length / (L * E);
                    long prevDoc = -1;
                    for (int t = 0; t < seq; t++) {
                        if (!clustered) {
                            featRow[b * seq + t] = -1;
                            continue;
                        }
                        if (docs[t] != prevDoc) {
                            prevDoc = docs[t];
                            s.featureDocuments++; // a document's part inside this window
                        }
                        int fr = s.featureRows++;
                        featRow[b * seq + t] = fr;
                        s.featureDomain[fr] = dom[b * seq + t];
                        s.featureDocument[fr] = s.featureDocuments - 1;
                        s.featureToken[fr] = ids[b * seq + t];
                    }
                    starts[b] = b * seq;
                    first[b] = 0;
                }
                starts[B] = B * seq;
                f.forward(ids, starts, first, slots, B);
                if (progress != null) progress.accept((long) B * seq);
            }
            f.observer(null);
        }
    }
}
