package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.reference.model.RefDraws;
import org.moe4j.reference.model.RefModel;
import org.moe4j.reference.model.RefResult;
import org.moe4j.reference.model.RefSpec;

/** Worked examples of the reference model: a loss computed by hand, and the routing rules on designed logits. */
class RefModelExamplesTest {

    // ---------------------------------------------------------------- a loss by hand

    /**
     * 1 layer, d = 2, one head, E = 2, k = 1, hidden 1, tokens [1, 2]. Attention projections are the identity, the
     * router is the identity (z = RMSNorm(h)), so every step can be followed on paper; this test is that paper.
     */
    @Test
    void tinyModelLossesByHand() {
        double eps = 1e-6;
        RefSpec s = new RefSpec(3, 2, 1, 1, 1, 2, 0, 1, 1, 10000.0, false, eps, 0, false, false, false, 0, false,
                0.1, 0.01, 0.5, 1e-3);
        Map<String, double[]> p = zeros(s);
        p.put(RefModel.EMBED, new double[] {0.3, -0.2, 1.0, 0.5, -0.4, 0.8});
        for (String w : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) p.put(RefModel.attn(0, w), new double[] {1, 0, 0, 1});
        p.put(RefModel.attnNorm(0), new double[] {1, 1});
        p.put(RefModel.ffnNorm(0), new double[] {1, 1});
        p.put(RefModel.router(0), new double[] {1, 0, 0, 1});
        double[][] w1 = {{0.5, -0.3}, {-0.4, 0.6}}, w3 = {{0.2, 0.7}, {0.9, 0.1}}, w2 = {{1.0, -0.5}, {0.3, 0.8}};
        for (int e = 0; e < 2; e++) {
            p.put(RefModel.expert(0, e, "gate_proj"), w1[e]);
            p.put(RefModel.expert(0, e, "up_proj"), w3[e]);
            p.put(RefModel.expert(0, e, "down_proj"), w2[e]);
        }
        p.put(RefModel.FINAL_NORM, new double[] {1, 1});
        double[][] head = {{0.5, -1}, {1, 0.2}, {-0.3, 0.7}};
        p.put(RefModel.LM_HEAD, new double[] {0.5, -1, 1, 0.2, -0.3, 0.7});
        double[][][] noise = {{{0.5, -0.5}, {0.2, 0.1}}};
        RefResult r = RefModel.run(s, p, new int[][] {{1, 2}}, new RefDraws(null, null, noise, null));

        // attention: a = x / rms(x); q = k = v = a; RoPE (one pair, angle = position) turns q and k at position 1
        double[] x0 = {1.0, 0.5}, x1 = {-0.4, 0.8};
        double[] a0 = rmsNorm(x0, eps), a1 = rmsNorm(x1, eps);
        double[] q1 = {a1[0] * Math.cos(1) - a1[1] * Math.sin(1), a1[1] * Math.cos(1) + a1[0] * Math.sin(1)};
        // query 0 sees only key 0: o0 = v0 = a0. Query 1: scores q1·k0/√2 (k0 = a0, not turned) and q1·q1/√2
        double s0 = dot(q1, a0) / Math.sqrt(2), s1 = dot(q1, q1) / Math.sqrt(2);
        double p0 = Math.exp(s0) / (Math.exp(s0) + Math.exp(s1)), p1 = 1 - p0;
        double[] h0 = {x0[0] + a0[0], x0[1] + a0[1]};
        double[] h1 = {x1[0] + p0 * a0[0] + p1 * a1[0], x1[1] + p0 * a0[1] + p1 * a1[1]};
        // router: z = m = RMSNorm(h): m0 = (1.26, 0.63) picks expert 0, m1 = (-0.58, 1.29) picks expert 1
        double[] m0 = rmsNorm(h0, eps), m1 = rmsNorm(h1, eps);
        double g0 = softmax(m0)[0], g1 = softmax(m1)[1];
        assertArrayEquals(new int[] {0}, r.experts()[0][0][0]);
        assertArrayEquals(new int[] {1}, r.experts()[0][0][1]);
        assertEquals(g0, r.gates()[0][0][0][0], 1e-12);
        assertEquals(g1, r.gates()[0][0][1][0], 1e-12);
        // FFN_e(m) = W2_e · silu(W1_e·m) · (W3_e·m), hidden 1
        double f0 = silu(dot(w1[0], m0)) * dot(w3[0], m0), f1 = silu(dot(w1[1], m1)) * dot(w3[1], m1);
        double[] y0 = {h0[0] + g0 * w2[0][0] * f0, h0[1] + g0 * w2[0][1] * f0};
        double[] y1 = {h1[0] + g1 * w2[1][0] * f1, h1[1] + g1 * w2[1][1] * f1};
        double[] n0 = rmsNorm(y0, eps), n1 = rmsNorm(y1, eps);
        double[] logits0 = {dot(head[0], n0), dot(head[1], n0), dot(head[2], n0)};
        double[] logits1 = {dot(head[0], n1), dot(head[1], n1), dot(head[2], n1)};
        assertArrayEquals(logits0, r.logits()[0][0], 1e-12);
        assertArrayEquals(logits1, r.logits()[0][1], 1e-12);

        // one label: position 0 predicts token 2
        double lse0 = lse(logits0);
        assertEquals(lse0 - logits0[2], r.ce(), 1e-12);
        assertEquals(lse0 * lse0, r.outZ(), 1e-12);
        // LB: (E'/k') Σ_e c_e p̄_e / N with c = (1, 1), N = 2, p̄ = mean of softmax(z)
        double[] pz0 = softmax(m0), pz1 = softmax(m1);
        double lb = 2.0 * (1 * (pz0[0] + pz1[0]) / 2 + 1 * (pz0[1] + pz1[1]) / 2) / 2;
        assertEquals(lb, r.lb(), 1e-12);
        double z = (Math.pow(lse(m0), 2) + Math.pow(lse(m1), 2)) / 2;
        assertEquals(z, r.z(), 1e-12);

        // ERC: R0 = (1, 0), R1 = (0, 1): ε = √2 / 2 both; R̃_i = R_i ⊙ (1 + ε u_i); M[i][j] = |W1_j · R̃_i|
        double e = Math.sqrt(2) / 2;
        double[][] rt = {{1 + e * 0.5, 0}, {0, 1 + e * 0.1}};
        double[][] m = new double[2][2];
        for (int i = 0; i < 2; i++) for (int j = 0; j < 2; j++) m[i][j] = Math.abs(dot(w1[j], rt[i]));
        double erc = (Math.max(m[0][1] - m[0][0], 0) + Math.max(m[1][0] - m[0][0], 0)
                + Math.max(m[1][0] - m[1][1], 0) + Math.max(m[0][1] - m[1][1], 0)) / 4;
        assertEquals(erc, r.erc(), 1e-12);
        assertEquals(e, r.ercEpsMean()[0], 1e-12);
        assertEquals(lse0 - logits0[2] + 1e-3 * lse0 * lse0 + 0.1 * lb + 0.01 * z + 0.5 * erc, r.total(), 1e-12);
    }

    // ---------------------------------------------------------------- routing on designed logits

    /**
     * d = V = 8, one layer, o_proj = 0 and embedding row v = e_v: the MoE sees m = RMSNorm(e_v) = √8 e_v, so a
     * router Wr[e, v] = Z[v][e] / √8 gives token v exactly the routed logits Z[v].
     */
    static Map<String, double[]> designedLogits(RefSpec s, double[][] zPerToken, long seed) {
        Map<String, double[]> p = RefModel.randomParams(s, seed);
        int d = s.d();
        double[] emb = new double[s.vocab() * d];
        for (int v = 0; v < s.vocab(); v++) emb[v * d + v] = 1;
        p.put(RefModel.EMBED, emb);
        p.put(RefModel.attn(0, "o_proj"), new double[d * d]);
        p.put(RefModel.ffnNorm(0), filled(d, 1));
        double[] wr = new double[s.experts() * d];
        for (int v = 0; v < zPerToken.length; v++)
            for (int e = 0; e < zPerToken[v].length; e++) wr[e * d + v] = zPerToken[v][e] / Math.sqrt(d);
        p.put(RefModel.router(0), wr);
        return p;
    }

    static RefSpec routingSpec(int experts, int shared, int k, boolean overAll, double cf) {
        return new RefSpec(8, 8, 1, 1, 1, experts, shared, k, 3, 10000.0, false, 1e-14, 0, false, overAll, false, cf,
                false, 0.1, 0.01, 1, 1e-3);
    }

    /**
     * Doc 0 = A A A B: every A prefers expert 0 (logits 5 vs 4.9), B strongly prefers 1. By top-1 counts or by max
     * logit the pool of 1 would be {0}; by u = Σ_t softmax it is {1} (u1 ≈ 2.25 > u0 ≈ 1.57), and B comes last, so
     * the earlier tokens' pool depends on a future token. Doc 1 = EOS C C with P = 2 keeps {2, 3}.
     */
    @Test
    void poolIsTopPOfSummedSoftmaxOverTheWholeDocument() {
        double[][] z = new double[8][];
        Arrays.fill(z, new double[] {0, 0, 0, 0});
        z[0] = new double[] {0, 0, 0, 2}; // EOS
        z[1] = new double[] {5, 4.9, 0, 0}; // A
        z[2] = new double[] {0, 3, 0, 0}; // B
        z[3] = new double[] {0, 0, 1, 0}; // C
        int[][] tokens = {{1, 1, 1, 2, 0, 3, 3}};
        int[][][] pools = {{{1, 2}}};
        for (boolean overAll : new boolean[] {false, true}) {
            RefSpec s = routingSpec(4, 0, 1, overAll, 0);
            RefResult r = RefModel.run(s, designedLogits(s, z, 1), tokens, new RefDraws(pools, null, null, null));
            assertArrayEquals(new int[][] {{1}, {2, 3}}, r.pools()[0][0]);
            for (int t = 0; t < 4; t++) {
                assertArrayEquals(new int[] {1}, r.experts()[0][0][t], "doc 0 position " + t);
                // gate: softmax over the pool (here 1.0), or over all experts with softmaxOverAll
                double gate = overAll ? softmax(z[tokens[0][t]])[1] : 1.0;
                assertEquals(gate, r.gates()[0][0][t][0], 1e-9);
            }
            assertArrayEquals(new int[] {3}, r.experts()[0][0][4]); // EOS: logit 2 on expert 3
            assertArrayEquals(new int[] {2}, r.experts()[0][0][5]); // C: logit 1 on expert 2
            double gateC = overAll ? softmax(z[3])[2] : Math.exp(1) / (Math.exp(1) + 1);
            assertEquals(gateC, r.gates()[0][0][5][0], 1e-9);
        }
    }

    /** Equal router rows tie everywhere: the pool and the pick both take the lower index. */
    @Test
    void tiesGoToTheLowerIndex() {
        double[][] z = new double[8][];
        Arrays.fill(z, new double[] {1, 1, 0.5, 1});
        RefSpec s = routingSpec(4, 0, 1, false, 0);
        int[][] tokens = {{1, 2, 3}};
        RefResult pooled = RefModel.run(s, designedLogits(s, z, 2), tokens, new RefDraws(new int[][][] {{{2}}}, null, null, null));
        assertArrayEquals(new int[][] {{0, 1}}, pooled.pools()[0][0]);
        RefResult plain = RefModel.run(s, designedLogits(s, z, 2), tokens, RefDraws.none());
        for (int t = 0; t < 3; t++) {
            assertArrayEquals(new int[] {0}, pooled.experts()[0][0][t]);
            assertArrayEquals(new int[] {0}, plain.experts()[0][0][t]);
        }
    }

    /**
     * k' = 2 of E' = 2, CF 0.5, T = 8: C = max(4, floor(2·0.5·8/2)) = 4. Tokens A A A B B B B B; A ranks (0, 1), B
     * ranks (1, 0). First choices in token order: expert 0 takes A0..A2, expert 1 takes B3..B6 and drops B7. Then
     * second choices: expert 1 is full, so A0..A2 drop theirs; expert 0 has room for one: B3 kept, B4..B7 dropped.
     */
    @Test
    void capacityPlacesAllFirstChoicesBeforeSecondChoices() {
        double[][] z = new double[8][];
        Arrays.fill(z, new double[] {0, 0});
        z[1] = new double[] {1, 0};
        z[2] = new double[] {0, 1};
        RefSpec s = routingSpec(2, 0, 2, false, 0.5);
        Map<String, double[]> p = designedLogits(s, z, 3);
        int[][] tokens = {{1, 1, 1, 2, 2, 2, 2, 2}};
        RefResult r = RefModel.run(s, p, tokens, RefDraws.none());
        boolean[][] expected = {{false, true}, {false, true}, {false, true}, {false, false}, {false, true},
            {false, true}, {false, true}, {true, true}};
        for (int t = 0; t < 8; t++) assertArrayEquals(expected[t], r.dropped()[0][0][t], "position " + t);
        assertArrayEquals(new int[] {1, 1, 1, 0, 1, 1, 1, 2}, r.dropsAtPosition()[0]);
        assertArrayEquals(new int[] {8, 8}, r.expertCounts()[0]);
        assertArrayEquals(new int[] {4, 4}, r.keptCounts()[0]);

        // a token with no drop is untouched by capacity; one with every slot dropped keeps only its residual
        RefResult free = RefModel.run(routingSpec(2, 0, 2, false, 0), p, tokens, RefDraws.none());
        assertArrayEquals(free.logits()[0][3], r.logits()[0][3], 1e-12);
        Map<String, double[]> noExperts = new LinkedHashMap<>(p);
        for (int e = 0; e < 2; e++) noExperts.put(RefModel.expert(0, e, "down_proj"), new double[s.d() * s.hidden()]);
        RefResult residual = RefModel.run(s, noExperts, tokens, RefDraws.none());
        assertArrayEquals(residual.logits()[0][7], r.logits()[0][7], 1e-12);
        assertFalse(Arrays.equals(residual.logits()[0][6], r.logits()[0][6])); // slot 0 kept there
    }

    /** C = floor(k'·CF·T/E') rounded up to even, at least 4: 12 tokens on one expert keep 4 (CF .75) or 6 (CF .9). */
    @Test
    void capacityRoundsUpToEvenAndAtLeastFour() {
        double[][] z = new double[8][];
        Arrays.fill(z, new double[] {1, 0});
        int[][] tokens = {new int[12]};
        Arrays.fill(tokens[0], 1);
        double[] cfs = {0.75, 0.9, 0.1};
        int[] kept = {4, 6, 4}; // floor(4.5) = 4; floor(5.4) = 5 -> 6; floor(0.6) = 0 -> 4
        for (int i = 0; i < cfs.length; i++) {
            RefSpec s = routingSpec(2, 0, 1, false, cfs[i]);
            RefResult r = RefModel.run(s, designedLogits(s, z, 4), tokens, RefDraws.none());
            assertEquals(kept[i], r.keptCounts()[0][0], "CF " + cfs[i]);
            for (int t = 0; t < 12; t++) assertEquals(t >= kept[i] ? 1 : 0, r.dropsAtPosition()[0][t]);
        }
    }

    /** Matryoshka k' per layer, capped by the kept routed experts; shared experts come after, gate 1. */
    @Test
    void matryoshkaKAndSharedSlots() {
        RefSpec s = new RefSpec(9, 4, 2, 2, 1, 5, 1, 2, 3, 10000.0, false, 1e-6, 0, true, false, false, 0, false,
                0.1, 0.01, 1, 0);
        RefResult r = RefModel.run(s, RefModel.randomParams(s, 5), new int[][] {{3, 4, 5}},
                new RefDraws(null, new int[] {3, 9}, null, null));
        assertArrayEquals(new int[] {3, 4}, r.kRouted());
        for (int l = 0; l < 2; l++)
            for (int t = 0; t < 3; t++) {
                int[] ex = r.experts()[l][0][t];
                assertEquals(r.kRouted()[l] + 1, ex.length);
                assertEquals(4, ex[ex.length - 1]);
                assertEquals(1.0, r.gates()[l][0][t][ex.length - 1]);
                double sum = 0;
                for (int j = 0; j < ex.length - 1; j++) sum += r.gates()[l][0][t][j];
                assertEquals(1.0, sum, 1e-12); // normalizeTopK
            }
    }

    // ---------------------------------------------------------------- subsets, documents, grouped heads

    /**
     * A subset {0, 2, 3} of E = 4 (expert 3 shared) and the pruned E = 3 model holding those experts give the same
     * logits, losses (LB, capacity and ERC use E' = kept routed) and gradients; the removed expert gets none.
     */
    @Test
    void subsetEqualsThePrunedModel() {
        RefSpec full = new RefSpec(7, 4, 2, 1, 1, 4, 1, 2, 3, 10000.0, true, 1e-6, 0, false, false, false, 1.0, false,
                0.3, 0.2, 0.7, 0.1);
        RefSpec pruned = new RefSpec(7, 4, 2, 1, 1, 3, 1, 2, 3, 10000.0, true, 1e-6, 0, false, false, false, 1.0, false,
                0.3, 0.2, 0.7, 0.1);
        Map<String, double[]> pf = RefModel.randomParams(full, 6);
        int[] keep = {0, 2, 3};
        Map<String, double[]> pp = new LinkedHashMap<>();
        for (String name : RefModel.shapes(pruned).keySet()) pp.put(name, pf.get(name));
        for (int l = 0; l < 2; l++) {
            double[] wr = new double[3 * 4];
            for (int i = 0; i < 3; i++) {
                System.arraycopy(pf.get(RefModel.router(l)), keep[i] * 4, wr, i * 4, 4);
                for (String w : new String[] {"gate_proj", "up_proj", "down_proj"})
                    pp.put(RefModel.expert(l, i, w), pf.get(RefModel.expert(l, keep[i], w)));
            }
            pp.put(RefModel.router(l), wr);
        }
        Random rnd = new Random(7);
        double[][][] noise = new double[2][2][4];
        for (double[][] a : noise) for (double[] row : a) for (int c = 0; c < 4; c++) row[c] = 2 * rnd.nextDouble() - 1;
        int[][] tokens = {{1, 4, 0, 6, 2, 2, 5, 3, 1}, {6, 5}};
        RefResult a = RefModel.run(full, pf, tokens, new RefDraws(null, null, noise, new int[][] {keep, keep}));
        RefResult b = RefModel.run(pruned, pp, tokens, new RefDraws(null, null, noise, null));
        assertEquals(b.total(), a.total(), 1e-12);
        assertEquals(b.lb(), a.lb(), 1e-12);
        assertEquals(b.z(), a.z(), 1e-12);
        assertEquals(b.erc(), a.erc(), 1e-12);
        for (int t = 0; t < tokens[0].length; t++) assertArrayEquals(b.logits()[0][t], a.logits()[0][t], 1e-12);
        for (int l = 0; l < 2; l++) {
            assertEquals(0, a.expertCounts()[l][1]);
            for (int i = 0; i < 3; i++) {
                for (String w : new String[] {"gate_proj", "up_proj", "down_proj"})
                    assertArrayEquals(b.grads().get(RefModel.expert(l, i, w)),
                            a.grads().get(RefModel.expert(l, keep[i], w)), 1e-12);
                assertArrayEquals(Arrays.copyOfRange(b.grads().get(RefModel.router(l)), i * 4, i * 4 + 4),
                        Arrays.copyOfRange(a.grads().get(RefModel.router(l)), keep[i] * 4, keep[i] * 4 + 4), 1e-12);
            }
            assertArrayEquals(new double[4], Arrays.copyOfRange(a.grads().get(RefModel.router(l)), 4, 8));
            for (String w : new String[] {"gate_proj", "up_proj", "down_proj"})
                assertArrayEquals(new double[12], a.grads().get(RefModel.expert(l, 1, w)));
        }
    }

    /**
     * Sequences do not interact in the forward pass, so every loss can be rebuilt from one-sequence runs: CE and
     * outZ weighted by label tokens, z by tokens, LB local = the mean of the per-sequence LBs; LB global is not.
     */
    @Test
    void lossScopesOverSequences() {
        int[][] tokens = {{1, 4, 0, 6, 2}, {6, 5, 5}, {3}};
        for (boolean local : new boolean[] {true, false}) {
            RefSpec s = new RefSpec(7, 4, 2, 2, 1, 5, 1, 3, 3, 10000.0, false, 1e-6, 0, true, false, local, 1.25, true,
                    0.1, 0.01, 1, 1e-3);
            Map<String, double[]> p = RefModel.randomParams(s, 10);
            int[][][] pools = {{{2, 3}, {1}, {4}}, {{4, 1}, {3}, {2}}};
            RefResult all = RefModel.run(s, p, tokens, new RefDraws(pools, null, null, null));
            double ce = 0, outZ = 0, z = 0, lbMean = 0;
            int labels = 0, count = 0;
            for (int b = 0; b < tokens.length; b++) {
                int[][][] own = {{pools[0][b]}, {pools[1][b]}};
                RefResult one = RefModel.run(s, p, new int[][] {tokens[b]}, new RefDraws(own, null, null, null));
                ce += one.ce() * (tokens[b].length - 1);
                outZ += one.outZ() * (tokens[b].length - 1);
                z += one.z() * tokens[b].length;
                lbMean += one.lb() / tokens.length;
                labels += tokens[b].length - 1;
                count += tokens[b].length;
                for (int t = 0; t < tokens[b].length; t++) assertArrayEquals(one.logits()[0][t], all.logits()[b][t], 1e-12);
            }
            assertEquals(ce / labels, all.ce(), 1e-12);
            assertEquals(outZ / labels, all.outZ(), 1e-12);
            assertEquals(z / count, all.z(), 1e-12);
            if (local) assertEquals(lbMean, all.lb(), 1e-12);
            else assertNotEquals(lbMean, all.lb(), 1e-6);
        }
    }

    /** With docMask, a document's logits do not depend on the documents before it (RoPE positions stay packed). */
    @Test
    void docMaskIsolatesDocuments() {
        for (boolean docMask : new boolean[] {true, false}) {
            RefSpec s = new RefSpec(9, 4, 2, 2, 2, 4, 0, 2, 3, 10000.0, false, 1e-6, 0, false, false, false, 0, docMask,
                    0.1, 0.01, 1, 0);
            Map<String, double[]> p = RefModel.randomParams(s, 8);
            RefResult a = RefModel.run(s, p, new int[][] {{3, 4, 0, 5, 6}}, RefDraws.none());
            RefResult b = RefModel.run(s, p, new int[][] {{7, 1, 0, 5, 6}}, RefDraws.none());
            for (int t = 2; t < 5; t++)
                assertEquals(docMask, Arrays.equals(a.logits()[0][t], b.logits()[0][t]), "position " + t);
        }
    }

    /** Grouped heads: kvHeads = 1 equals kvHeads = 2 with both KV heads the same; the shared head sums the grads. */
    @Test
    void groupedQueryAttentionSharesOneKvHead() {
        RefSpec g = new RefSpec(9, 8, 1, 2, 1, 3, 0, 1, 3, 10000.0, true, 1e-6, 0, false, false, false, 0, false,
                0.1, 0.01, 1, 0.1);
        RefSpec m = new RefSpec(9, 8, 1, 2, 2, 3, 0, 1, 3, 10000.0, true, 1e-6, 0, false, false, false, 0, false,
                0.1, 0.01, 1, 0.1);
        Map<String, double[]> pg = RefModel.randomParams(g, 9), pm = new LinkedHashMap<>(pg);
        pm.put(RefModel.attn(0, "k_proj"), twice(pg.get(RefModel.attn(0, "k_proj"))));
        pm.put(RefModel.attn(0, "v_proj"), twice(pg.get(RefModel.attn(0, "v_proj"))));
        // k_norm is over the whole k vector: doubling it keeps its mean square, so the same weights repeated
        pm.put(RefModel.attn(0, "k_norm"), twice(pg.get(RefModel.attn(0, "k_norm"))));
        int[][] tokens = {{1, 2, 3, 4, 5}};
        RefResult a = RefModel.run(g, pg, tokens, RefDraws.none()), b = RefModel.run(m, pm, tokens, RefDraws.none());
        assertEquals(b.total(), a.total(), 1e-12);
        for (String w : new String[] {"k_proj", "v_proj", "k_norm"}) {
            double[] ga = a.grads().get(RefModel.attn(0, w)), gb = b.grads().get(RefModel.attn(0, w));
            double[] folded = new double[ga.length];
            for (int i = 0; i < gb.length; i++) folded[i % ga.length] += gb[i];
            assertArrayEquals(folded, ga, 1e-12, w);
        }
    }

    // ---------------------------------------------------------------- helpers

    static Map<String, double[]> zeros(RefSpec s) {
        Map<String, double[]> p = new LinkedHashMap<>();
        RefModel.shapes(s).forEach((name, shape) -> p.put(name, new double[Arrays.stream(shape).reduce(1, (x, y) -> x * y)]));
        return p;
    }

    static double[] twice(double[] a) {
        double[] b = Arrays.copyOf(a, 2 * a.length);
        System.arraycopy(a, 0, b, a.length, a.length);
        return b;
    }

    static double[] filled(int n, double v) {
        double[] a = new double[n];
        Arrays.fill(a, v);
        return a;
    }

    static double[] rmsNorm(double[] x, double eps) {
        double ms = 0;
        for (double v : x) ms += v * v / x.length;
        double r = 1 / Math.sqrt(ms + eps);
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = x[i] * r;
        return y;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double lse(double[] z) {
        double s = 0;
        for (double v : z) s += Math.exp(v);
        return Math.log(s);
    }

    static double[] softmax(double[] z) {
        double l = lse(z);
        double[] p = new double[z.length];
        for (int i = 0; i < z.length; i++) p[i] = Math.exp(z[i] - l);
        return p;
    }

    static double silu(double a) {
        return a / (1 + Math.exp(-a));
    }
}
