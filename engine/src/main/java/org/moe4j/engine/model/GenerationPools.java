package org.moe4j.engine.model;

import java.util.Arrays;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;

/**
 * EMO's evaluation pool during generation (the rule is ours; docs/ALGORITHMS.md "EMO in generation"). The future of
 * a generated document is unknown, so its pool cannot be scored over all of its tokens as in training:
 * <ol>
 *   <li>A prompt (prefill) is routed with the fixed pool size P per document, scored over the document's prompt
 *       tokens (the training rule restricted to what the prompt holds).</li>
 *   <li>After the prefill, the pool of each sequence's last document is frozen, per layer, and every generated
 *       token of that document routes inside it.</li>
 *   <li>A generated EOS opens a new document: it uses every expert, while its tokens' routed softmax is summed,
 *       until it has P tokens; then its pool (the top-P experts by that sum, ties to the lower index) is frozen.</li>
 * </ol>
 * State is per KV-cache slot and layer; a slot's state is reset by its prefill.
 */
public final class GenerationPools {
    private final int layers, evalPool, eosId;
    /** routed[l]: E_l - s, layer l's routed experts (a pruned layer may keep fewer). */
    private final int[] routed;
    /** frozen[slot][layer]: the pool, or null while the document is still being scored. */
    private final ExpertSet[][] frozen;
    private final ExpertSet[][] store;
    /** u[slot][layer][e]: Σ softmax over the current document's tokens (while unfrozen). */
    private final double[][][] u;
    private final int[] docTokens;
    private final ExpertSet[] perDoc;
    private boolean prefill;

    GenerationPools(ModelConfig c, int slots, int evalPool) {
        this.layers = c.layers();
        this.routed = new int[c.layers()];
        for (int l = 0; l < c.layers(); l++) routed[l] = c.routedExperts(l);
        this.evalPool = Math.min(evalPool, c.routedExperts());
        this.eosId = c.eosId();
        frozen = new ExpertSet[slots][layers];
        store = new ExpertSet[slots][layers];
        u = new double[slots][layers][];
        for (double[][] row : u) for (int l = 0; l < layers; l++) row[l] = new double[c.experts(l)];
        for (ExpertSet[] row : store) for (int l = 0; l < layers; l++) row[l] = new ExpertSet(c.experts(l));
        docTokens = new int[slots];
        perDoc = new ExpertSet[Math.max(1, slots)];
    }

    /** Pool size P. */
    public int poolSize() {
        return evalPool;
    }

    /** The frozen pool of (slot, layer), or null while its document is unfrozen. */
    public ExpertSet pool(int slot, int layer) {
        return frozen[slot][layer];
    }

    /** A call is either all prompts from position 0 or one new token per sequence. */
    void checkBatch(Batch b) {
        boolean allFresh = true, allSingle = true;
        for (int i = 0; i < b.B; i++) {
            allFresh &= b.firstPos[i] == 0;
            allSingle &= b.seqStart[i + 1] - b.seqStart[i] == 1 && b.firstPos[i] > 0;
        }
        if (!allFresh && !allSingle)
            throw new Moe4jException("EMO generation pools: a call must prefill new prompts or decode one token per "
                    + "sequence, not both");
        prefill = allFresh;
        if (!prefill) {
            for (int i = 0; i < b.B; i++) {
                int s = b.slot[i];
                if (b.tokens[b.seqStart[i]] == eosId) { // a generated EOS opens a new document
                    for (int l = 0; l < layers; l++) {
                        frozen[s][l] = null;
                        Arrays.fill(u[s][l], 0.0);
                    }
                    docTokens[s] = 0;
                }
            }
        }
    }

    void before(int l, Batch b, RoutingControl ctl) {
        if (prefill) {
            ctl.fixedPools(evalPool);
            return;
        }
        for (int i = 0; i < b.B; i++) perDoc[i] = frozen[b.slot[i]][l];
        ctl.givenPoolSets(perDoc);
    }

    void after(int l, Batch b, Routing r) {
        if (prefill) {
            for (int i = 0; i < b.B; i++) {
                int s = b.slot[i], last = b.seqStart[i + 1] - 1;
                ExpertSet p = store[s][l].copyFrom(r.pool[r.docOfToken[last]]);
                frozen[s][l] = p;
                Arrays.fill(u[s][l], 0.0);
                if (l == 0) docTokens[s] = 0;
            }
            return;
        }
        for (int i = 0; i < b.B; i++) {
            int s = b.slot[i], t = b.seqStart[i];
            if (frozen[s][l] != null) continue;
            double[] us = u[s][l];
            int experts = r.experts();
            for (int e = 0; e < routed[l]; e++) us[e] += r.prob[t * experts + e];
            if (l == layers - 1) docTokens[s]++;
        }
        if (l == layers - 1) {
            for (int i = 0; i < b.B; i++) {
                int s = b.slot[i];
                if (frozen[s][0] != null || docTokens[s] < evalPool) continue;
                for (int ll = 0; ll < layers; ll++) freeze(s, ll);
            }
        }
    }

    /** pool = the top-P routed experts by u, ties to the lower index. */
    private void freeze(int s, int l) {
        ExpertSet p = store[s][l].clear();
        double[] us = u[s][l];
        for (int j = 0; j < Math.min(evalPool, routed[l]); j++) {
            int best = -1;
            for (int e = 0; e < routed[l]; e++) {
                if (p.contains(e)) continue;
                if (best < 0 || us[e] > us[best]) best = e;
            }
            p.add(best);
        }
        frozen[s][l] = p;
    }
}
