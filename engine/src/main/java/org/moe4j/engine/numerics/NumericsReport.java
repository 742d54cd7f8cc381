package org.moe4j.engine.numerics;

import org.moe4j.io.AtomicFile;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeTransformer;
import org.moe4j.engine.model.StepStats;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Routing;
import org.moe4j.simd.Tensor;

/**
 * RESULT.json of {@code ./moe4j numerics}. Fields (a value that is off is null):
 * <pre>
 *   settings        the run as pinned: mode, eos_id, k_per_layer, norm_topk_prob, lb_scope, weights, capacity_factor,
 *                   doc_mask, erc
 *   loss            {ce, out_z, lb, z, erc, total}  lb, z, erc: means over layers, unweighted; total as the engine adds it
 *   per_layer       {lb, z, erc, erc_eps_mean, k_routed, expert_counts, kept_counts}, each an array over layers; the
 *                   counts are [layer][routed expert e = 0 .. E-s-1]: picks before capacity drops, and after
 *   logits_stats    {shape [N, V], mean, std (population), sum_abs, sum} over every position of every sequence
 *   logits_first_seq  [min(8, T0)][V] logits of the first positions of sequence 0
 *   pools           (emo) [layer][sequence][document] sorted expert ids
 *   capacity, drops (capacity factor > 0) [layer][sequence] capacity C; [layer] of {sequence, position, rank, expert}
 *   routing         (--dump-routing) [layer][sequence][position] {experts, gates[, dropped]}, shared experts last
 * </pre>
 */
final class NumericsReport {
    // objects indented, arrays on one line: a layer's counts or a row of logits reads as one line
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final DefaultPrettyPrinter PRINTER = new DefaultPrettyPrinter()
            .withArrayIndenter(DefaultPrettyPrinter.NopIndenter.instance);
    static final int FIRST_POSITIONS = 8;

    private final NumericsRequest q;
    private final ModelConfig c;
    private final NumericsInputs.Tokens tok;
    private final ObjectNode root = JSON.createObjectNode();

    NumericsReport(NumericsRequest q, ModelConfig c, NumericsInputs.Tokens tok, int[] kPer) {
        this.q = q;
        this.c = c;
        this.tok = tok;
        root.put("checkpoint", q.ckpt().toString());
        root.put("tokens_file", q.tokens().toString());
        ObjectNode st = root.putObject("settings");
        st.put("mode", q.mode().label());
        st.put("eos_id", tok.eosId());
        ArrayNode k = st.putArray("k_per_layer");
        for (int l = 0; l < c.layers(); l++) k.add(kPer == null ? c.routedK(l) : kPer[l]);
        st.put("norm_topk_prob", c.routing().normalizeTopK());
        st.put("lb_scope", c.routing().lbScope() == LbScope.LOCAL ? "local" : "global");
        ObjectNode w = st.putObject("weights");
        w.put("lb", c.loss().lb());
        w.put("z", c.loss().routerZ());
        w.put("erc", c.loss().erc());
        w.put("out_z", c.loss().outputZ());
        st.put("capacity_factor", q.capacityFactor());
        st.put("doc_mask", q.docMask());
        st.put("erc", q.ercNoise() != null && c.loss().erc() > 0);
        root.put("sequences", tok.sequences().length);
        root.put("tokens", tok.count());
    }

    ObjectNode json() {
        return root;
    }

    private static void num(ObjectNode o, String key, double v) {
        if (Double.isNaN(v)) o.putNull(key);
        else o.put(key, v);
    }

    private static void num(ArrayNode a, double v) {
        if (Double.isNaN(v)) a.addNull();
        else a.add(v);
    }

    /** Reads the transformer after forward (before backward overwrites the logits). */
    void forward(MoeTransformer tr) {
        StepStats s = tr.stats();
        int L = c.layers(), routed = c.routedExperts(), B = tok.sequences().length, N = tok.count(), V = c.vocab();
        root.put("labels", s.labels);
        ObjectNode loss = root.putObject("loss");
        num(loss, "ce", s.ce);
        num(loss, "out_z", s.outZ);
        num(loss, "lb", s.lbMean);
        num(loss, "z", s.zMean);
        num(loss, "erc", s.ercMean);
        num(loss, "total", s.total);

        ObjectNode pl = root.putObject("per_layer");
        ArrayNode lb = pl.putArray("lb"), z = pl.putArray("z"), erc = pl.putArray("erc"), eps = pl.putArray("erc_eps_mean");
        ArrayNode kr = pl.putArray("k_routed"), cb = pl.putArray("expert_counts"), ca = pl.putArray("kept_counts");
        for (int l = 0; l < L; l++) {
            num(lb, s.lb[l]);
            num(z, s.z[l]);
            num(erc, s.erc[l]);
            num(eps, s.ercEps[l]);
            kr.add(s.kRouted[l]);
            Routing r = tr.routing(l);
            ArrayNode b = cb.addArray(), a = ca.addArray();
            for (int e = 0; e < c.routedExperts(l); e++) {
                b.add(r.countBefore[e]);
                a.add(r.countAfter[e]);
            }
        }

        // logits [N, V]: statistics in float64 over the float32 values, two passes for the standard deviation
        Tensor lg = tr.logits();
        double sum = 0, sumAbs = 0;
        for (long i = 0; i < (long) N * V; i++) {
            double x = lg.get(i);
            sum += x;
            sumAbs += Math.abs(x);
        }
        double mean = sum / ((double) N * V), var = 0;
        for (long i = 0; i < (long) N * V; i++) {
            double dx = lg.get(i) - mean;
            var += dx * dx;
        }
        ObjectNode ls = root.putObject("logits_stats");
        ls.putArray("shape").add(N).add(V);
        ls.put("mean", mean);
        ls.put("std", Math.sqrt(var / ((double) N * V)));
        ls.put("sum_abs", sumAbs);
        ls.put("sum", sum);
        ArrayNode first = root.putArray("logits_first_seq");
        for (int t = 0; t < Math.min(FIRST_POSITIONS, tok.sequences()[0].length); t++) {
            ArrayNode row = first.addArray();
            for (int v = 0; v < V; v++) row.add(lg.get((long) t * V + v));
        }

        if (q.mode() == NumericsRequest.Mode.EMO) {
            ArrayNode pools = root.putArray("pools");
            for (int l = 0; l < L; l++) {
                Routing r = tr.routing(l);
                ArrayNode perSeq = pools.addArray();
                ArrayNode cur = null;
                int curSeq = -1;
                for (int dc = 0; dc < r.documents(); dc++) {
                    int b = r.sequenceOf(r.docStart[dc]);
                    if (b != curSeq) {
                        cur = perSeq.addArray();
                        curSeq = b;
                    }
                    ArrayNode ids = cur.addArray();
                    ExpertSet p = r.pool[dc];
                    for (int e = p.nextMember(0); e >= 0; e = p.nextMember(e + 1)) ids.add(e);
                }
            }
        }

        int[] starts = tok.starts();
        if (q.capacityFactor() > 0) {
            ArrayNode cap = root.putArray("capacity"), drops = root.putArray("drops");
            for (int l = 0; l < L; l++) {
                Routing r = tr.routing(l);
                ArrayNode cl = cap.addArray(), dl = drops.addArray();
                for (int b = 0; b < B; b++) cl.add(r.capacity[b]);
                int kTot = r.kTot();
                for (int b = 0; b < B; b++)
                    for (int t = starts[b]; t < starts[b + 1]; t++)
                        for (int j = 0; j < kTot; j++)
                            if (r.dropped[t * kTot + j]) {
                                ObjectNode o = dl.addObject();
                                o.put("sequence", b);
                                o.put("position", t - starts[b]);
                                o.put("rank", j);
                                o.put("expert", r.expert[t * kTot + j]);
                            }
            }
        }

        if (q.dumpRouting()) {
            ArrayNode rt = root.putArray("routing");
            for (int l = 0; l < L; l++) {
                Routing r = tr.routing(l);
                int kTot = r.kTot();
                ArrayNode al = rt.addArray();
                for (int b = 0; b < B; b++) {
                    ArrayNode ab = al.addArray();
                    for (int t = starts[b]; t < starts[b + 1]; t++) {
                        ObjectNode o = ab.addObject();
                        ArrayNode ex = o.putArray("experts"), g = o.putArray("gates");
                        ArrayNode dr = q.capacityFactor() > 0 ? o.putArray("dropped") : null;
                        for (int j = 0; j < kTot; j++) {
                            int slot = t * kTot + j;
                            if (r.expert[slot] < 0) continue; // a pool smaller than k' leaves the slot empty
                            ex.add(r.expert[slot]);
                            g.add(r.gate[slot]);
                            if (dr != null) dr.add(r.dropped[slot]);
                        }
                    }
                }
            }
        }
    }

    /** Writes the JSON atomically: a temporary file beside the target, renamed over it. */
    void write(Path out) {
        try {
            AtomicFile.write(out, tmp -> JSON.writer(PRINTER).writeValue(tmp.toFile(), root));
        } catch (IOException e) {
            throw new Moe4jException(out + ": cannot write the result: " + e.getMessage(), e);
        }
    }
}
