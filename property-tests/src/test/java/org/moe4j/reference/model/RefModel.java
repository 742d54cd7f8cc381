package org.moe4j.reference.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * The whole MoE language model in float64: forward, every loss and every gradient, as plain loops written from
 * ALGORITHMS.md sections 1-3. It shares no code with the engine; it is the twin the engine's training step is
 * checked against, and it is itself checked by finite differences (RefModelFiniteDifferenceProperties).
 *
 * <p>Weights are row-major: a matrix W [rows, cols] maps x [cols] to W x [rows]. Activations are [b][t][...]
 * (sequence, position, features); sequences may have different lengths. The backward is explicit: each forward
 * step keeps what its backward needs in a {@link LayerState}, and the backward walks the layers in reverse.
 *
 * <p>Choices where the brief is silent: k' of a layer is min(drawn k', kept routed experts) and is the k' of LB and
 * capacity (a token whose pool is smaller uses its whole pool); with no label token at all, ce = outZ = 0; a layer
 * keeping fewer than 2 routed experts has ERC 0 and mean ε 0. No gradient flows through a discrete choice (pool,
 * top-k, drop, ERC hinge sign) nor through ERC's ε.
 */
public final class RefModel {
    private RefModel() {
    }

    // ---------------------------------------------------------------- parameter names (HF / EMO)

    public static final String EMBED = "model.embed_tokens.weight";
    public static final String FINAL_NORM = "model.norm.weight";
    public static final String LM_HEAD = "lm_head.weight";

    public static String attnNorm(int l) {
        return "model.layers." + l + ".pre_attention_layernorm.weight";
    }

    /** which: q_proj, k_proj, v_proj, o_proj, q_norm, k_norm. */
    public static String attn(int l, String which) {
        return "model.layers." + l + ".self_attn." + which + ".weight";
    }

    public static String ffnNorm(int l) {
        return "model.layers." + l + ".pre_feedforward_layernorm.weight";
    }

    public static String router(int l) {
        return "model.layers." + l + ".mlp.gate.weight";
    }

    /** which: gate_proj (W1), up_proj (W3), down_proj (W2). */
    public static String expert(int l, int j, String which) {
        return "model.layers." + l + ".mlp.experts." + j + "." + which + ".weight";
    }

    /** Every parameter with its shape, in a fixed order. */
    public static Map<String, int[]> shapes(RefSpec s) {
        int d = s.d(), qDim = s.heads() * s.headDim(), kvDim = s.kvHeads() * s.headDim(), h = s.hidden();
        Map<String, int[]> m = new LinkedHashMap<>();
        m.put(EMBED, new int[] {s.vocab(), d});
        for (int l = 0; l < s.layers(); l++) {
            m.put(attnNorm(l), new int[] {d});
            m.put(attn(l, "q_proj"), new int[] {qDim, d});
            m.put(attn(l, "k_proj"), new int[] {kvDim, d});
            m.put(attn(l, "v_proj"), new int[] {kvDim, d});
            m.put(attn(l, "o_proj"), new int[] {d, qDim});
            if (s.qkNorm()) {
                m.put(attn(l, "q_norm"), new int[] {qDim});
                m.put(attn(l, "k_norm"), new int[] {kvDim});
            }
            m.put(ffnNorm(l), new int[] {d});
            m.put(router(l), new int[] {s.experts(), d});
            for (int j = 0; j < s.experts(); j++) {
                m.put(expert(l, j, "gate_proj"), new int[] {h, d});
                m.put(expert(l, j, "up_proj"), new int[] {h, d});
                m.put(expert(l, j, "down_proj"), new int[] {d, h});
            }
        }
        m.put(FINAL_NORM, new int[] {d});
        m.put(LM_HEAD, new int[] {s.vocab(), d});
        return m;
    }

    /** Norm weights 1 + N(0, 0.1²), embeddings N(0, 1), every other weight N(0, 0.3²): routing is far from uniform. */
    public static Map<String, double[]> randomParams(RefSpec s, long seed) {
        Random rnd = new Random(seed);
        Map<String, double[]> params = new LinkedHashMap<>();
        for (Map.Entry<String, int[]> e : shapes(s).entrySet()) {
            double[] w = new double[size(e.getValue())];
            String name = e.getKey();
            boolean norm = e.getValue().length == 1;
            for (int i = 0; i < w.length; i++) {
                double g = rnd.nextGaussian();
                w[i] = norm ? 1 + 0.1 * g : name.equals(EMBED) ? g : 0.3 * g;
            }
            params.put(name, w);
        }
        return params;
    }

    static int size(int[] shape) {
        int n = 1;
        for (int x : shape) n *= x;
        return n;
    }

    // ---------------------------------------------------------------- the step

    /** What one layer's backward needs; [b][t][...] unless said. */
    private static final class LayerState {
        double[][][] x, a, q, k, v, qn, kn, qr, kr, o, h, m, z, p;
        double[][] rAttn, rQ, rK, rFfn, lse; // inverse RMS of each normed vector; logsumexp of the softmax domain
        double[][][][] att;                  // [b][head][t][s] attention probabilities
        boolean[] kept;                      // [E] experts of the layer's subset
        int[] keptRouted;                    // kept routed ids, sorted
        int kRouted;
        boolean[][][] domain;                // [b][t][E] where p is defined (pool, or all kept with softmaxOverAll)
        int[][][] picks;                     // [b][t][j] routed picks in rank order
        double[][][] gates;                  // [b][t][j]
        boolean[][][] dropped;               // [b][t][j]
        int[][][] pools;                     // [b][doc] sorted, null without pools
        double[][] lbGradP;                  // [b][E] d lb_l / d p_{b,t,e} (the same for every t: c is a constant)
        int tokens;                          // N, all tokens of all sequences
    }

    public static RefResult run(RefSpec s, Map<String, double[]> params, int[][] tokens, RefDraws draws) {
        return run(s, params, tokens, draws, null);
    }

    /**
     * One training step of the reference model.
     *
     * @param ercEpsOverride [layer][i] ε of the i-th kept routed expert to use instead of the one computed from the
     *                       router (null = computed). The gradient treats ε as a constant, so a finite-difference
     *                       check of the router weights holds ε fixed through this.
     */
    public static RefResult run(RefSpec s, Map<String, double[]> params, int[][] tokens, RefDraws draws,
                                double[][] ercEpsOverride) {
        if (draws == null) draws = RefDraws.none();
        checkInputs(s, params, tokens, draws);
        int B = tokens.length, L = s.layers(), d = s.d(), V = s.vocab();
        Map<String, double[]> grads = new LinkedHashMap<>();
        for (Map.Entry<String, int[]> e : shapes(s).entrySet()) grads.put(e.getKey(), new double[size(e.getValue())]);

        // embedding gather
        double[] emb = params.get(EMBED);
        double[][][] x = new double[B][][];
        for (int b = 0; b < B; b++) {
            x[b] = new double[tokens[b].length][];
            for (int t = 0; t < tokens[b].length; t++) x[b][t] = Arrays.copyOfRange(emb, tokens[b][t] * d, tokens[b][t] * d + d);
        }

        // layers
        LayerState[] st = new LayerState[L];
        double[] lbL = new double[L], zL = new double[L];
        for (int l = 0; l < L; l++) {
            st[l] = new LayerState();
            x = layerForward(s, params, l, x, tokens, draws, st[l], lbL, zL);
        }

        // final RMSNorm, LM head: logits = Wlm RMSNorm(x)
        double[] wFinal = params.get(FINAL_NORM), wHead = params.get(LM_HEAD);
        double[][][] f = new double[B][][], logits = new double[B][][];
        double[][] rFinal = new double[B][];
        for (int b = 0; b < B; b++) {
            int T = tokens[b].length;
            f[b] = new double[T][];
            logits[b] = new double[T][];
            rFinal[b] = new double[T];
            for (int t = 0; t < T; t++) {
                rFinal[b][t] = invRms(x[b][t], s.normEps());
                f[b][t] = rmsApply(x[b][t], wFinal, rFinal[b][t]);
                logits[b][t] = matVec(wHead, V, d, f[b][t]);
            }
        }

        // CE = mean_t (lse_t - logit_t[label]), outZ = mean_t lse_t², over label tokens (label of t is token t+1)
        int labels = 0;
        for (int[] seq : tokens) labels += seq.length - 1;
        double ce = 0, outZ = 0;
        double[][][] dLogits = new double[B][][];
        for (int b = 0; b < B; b++) {
            int T = tokens[b].length;
            dLogits[b] = new double[T][V];
            for (int t = 0; t + 1 < T; t++) {
                int label = tokens[b][t + 1];
                double lse = logSumExp(logits[b][t], null);
                ce += (lse - logits[b][t][label]) / labels;
                outZ += lse * lse / labels;
                // d ce / d logit_v = (softmax_v - [v = label]) / N; d outZ / d logit_v = 2 lse softmax_v / N
                for (int v = 0; v < V; v++) {
                    double pv = Math.exp(logits[b][t][v] - lse);
                    dLogits[b][t][v] = ((pv - (v == label ? 1 : 0)) + s.wOutZ() * 2 * lse * pv) / labels;
                }
            }
        }

        // ERC, per layer, independent of the batch; its gradient goes straight into grads
        double[] ercL = new double[L], ercEps = new double[L];
        StringBuilder ercDecisions = new StringBuilder();
        for (int l = 0; l < L; l++) {
            if (draws.ercNoise() == null) {
                ercL[l] = Double.NaN;
                ercEps[l] = Double.NaN;
                continue;
            }
            double[] r = erc(s, params, l, st[l].keptRouted, draws.ercNoise()[l],
                    ercEpsOverride == null ? null : ercEpsOverride[l], s.wErc() / L, grads, ercDecisions);
            ercL[l] = r[0];
            ercEps[l] = r[1];
        }

        double lb = mean(lbL), z = mean(zL), erc = draws.ercNoise() == null ? Double.NaN : mean(ercL);
        double total = ce + s.wOutZ() * outZ + s.wLb() * lb + s.wZ() * z + (Double.isNaN(erc) ? 0 : s.wErc() * erc);

        // backward: LM head, final norm, layers in reverse, embedding scatter
        double[] gHead = grads.get(LM_HEAD), gFinal = grads.get(FINAL_NORM);
        double[][][] dx = new double[B][][];
        for (int b = 0; b < B; b++) {
            dx[b] = new double[tokens[b].length][];
            for (int t = 0; t < tokens[b].length; t++) {
                outerAdd(gHead, V, d, dLogits[b][t], f[b][t]);
                double[] df = new double[d];
                matTVecAdd(wHead, V, d, dLogits[b][t], df);
                dx[b][t] = rmsBackward(x[b][t], wFinal, rFinal[b][t], df, gFinal);
            }
        }
        for (int l = L - 1; l >= 0; l--) dx = layerBackward(s, params, grads, l, st[l], dx, s.wLb() / L, s.wZ() / L);
        double[] gEmb = grads.get(EMBED);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < tokens[b].length; t++)
                for (int c = 0; c < d; c++) gEmb[tokens[b][t] * d + c] += dx[b][t][c];

        return result(s, st, tokens, ce, outZ, lb, z, erc, total, lbL, zL, ercL, ercEps, logits, grads, ercDecisions);
    }

    // ---------------------------------------------------------------- one decoder layer

    /** out = h + MoE(RMSNorm(h)), h = x + Attn(RMSNorm(x)). */
    private static double[][][] layerForward(RefSpec s, Map<String, double[]> P, int l, double[][][] x, int[][] tokens,
                                             RefDraws draws, LayerState st, double[] lbL, double[] zL) {
        attentionForward(s, P, l, x, tokens, st);
        int B = x.length, d = s.d(), E = s.experts();
        double[] wn = P.get(ffnNorm(l)), wr = P.get(router(l));
        st.m = new double[B][][];
        st.z = new double[B][][];
        st.rFfn = new double[B][];
        for (int b = 0; b < B; b++) {
            int T = x[b].length;
            st.m[b] = new double[T][];
            st.z[b] = new double[T][];
            st.rFfn[b] = new double[T];
            for (int t = 0; t < T; t++) {
                st.rFfn[b][t] = invRms(st.h[b][t], s.normEps());
                st.m[b][t] = rmsApply(st.h[b][t], wn, st.rFfn[b][t]);
                st.z[b][t] = matVec(wr, E, d, st.m[b][t]); // router logits z = Wr m, all E rows
            }
        }
        route(s, l, tokens, draws, st, lbL, zL);

        // MoE: Σ_{kept picks} g·FFN_e(m) + Σ_{shared j} FFN_j(m)
        double[][][] out = new double[B][][];
        for (int b = 0; b < B; b++) {
            out[b] = new double[x[b].length][];
            for (int t = 0; t < x[b].length; t++) {
                double[] y = st.h[b][t].clone();
                int[] pk = st.picks[b][t];
                for (int j = 0; j < pk.length; j++) {
                    if (st.dropped[b][t][j]) continue;
                    axpy(st.gates[b][t][j], ffn(s, P, l, pk[j], st.m[b][t]), y);
                }
                for (int e = s.routed(); e < E; e++) if (st.kept[e]) axpy(1.0, ffn(s, P, l, e, st.m[b][t]), y);
                out[b][t] = y;
            }
        }
        return out;
    }

    /** The backward of {@link #layerForward}: returns d total / d x of the layer and adds the parameter gradients. */
    private static double[][][] layerBackward(RefSpec s, Map<String, double[]> P, Map<String, double[]> G, int l,
                                              LayerState st, double[][][] dOut, double lbScale, double zScale) {
        int B = dOut.length, d = s.d(), E = s.experts();
        double[] wn = P.get(ffnNorm(l)), wr = P.get(router(l));
        double[] gn = G.get(ffnNorm(l)), gr = G.get(router(l));
        double[][][] dh = new double[B][][];
        for (int b = 0; b < B; b++) {
            dh[b] = new double[dOut[b].length][];
            for (int t = 0; t < dOut[b].length; t++) {
                double[] m = st.m[b][t], dy = dOut[b][t], p = st.p[b][t];
                double[] dm = new double[d];
                int[] pk = st.picks[b][t];
                double[] g = st.gates[b][t];

                // experts: dg_j = dy · FFN_e(m); the FFN sees dy scaled by its gate
                double[] dg = new double[pk.length];
                for (int j = 0; j < pk.length; j++) {
                    if (st.dropped[b][t][j]) continue;
                    dg[j] = dot(dy, ffn(s, P, l, pk[j], m));
                    ffnBackward(s, P, G, l, pk[j], m, scale(dy, g[j]), dm);
                }
                for (int e = s.routed(); e < E; e++) if (st.kept[e]) ffnBackward(s, P, G, l, e, m, dy, dm);

                // gates -> p: g_j = p_{e_j}, or with normalizeTopK g_j = p_{e_j} / S, S = Σ_picked p,
                // so dp_{e_i} = (dg_i - Σ_j dg_j g_j) / S
                double[] dp = new double[E];
                if (s.normalizeTopK()) {
                    double sum = 0, dgg = 0;
                    for (int j = 0; j < pk.length; j++) {
                        sum += p[pk[j]];
                        dgg += dg[j] * g[j];
                    }
                    for (int j = 0; j < pk.length; j++) dp[pk[j]] += (dg[j] - dgg) / sum;
                } else {
                    for (int j = 0; j < pk.length; j++) dp[pk[j]] += dg[j];
                }
                // load balance through p̄: d lb / d p_{t,e} is a constant of the scope
                for (int e = 0; e < E; e++) dp[e] += lbScale * st.lbGradP[b][e];

                // p = softmax over the domain: dz_i = p_i (dp_i - Σ_e p_e dp_e); z-loss: d lse² / dz_i = 2 lse p_i
                boolean[] dom = st.domain[b][t];
                double pdp = 0;
                for (int e = 0; e < E; e++) if (dom[e]) pdp += p[e] * dp[e];
                double[] dz = new double[E];
                for (int e = 0; e < E; e++) {
                    if (!dom[e]) continue;
                    dz[e] = p[e] * (dp[e] - pdp) + zScale * 2 * st.lse[b][t] * p[e] / st.tokens;
                }
                outerAdd(gr, E, d, dz, m);
                matTVecAdd(wr, E, d, dz, dm);

                // h feeds the residual and the FFN norm
                double[] dhn = rmsBackward(st.h[b][t], wn, st.rFfn[b][t], dm, gn);
                dh[b][t] = add(dy, dhn);
            }
        }
        return attentionBackward(s, P, G, l, st, dh);
    }

    // ---------------------------------------------------------------- attention

    /** h = x + Wo · softmax_causal(RoPE(q)·RoPE(k) / sqrt(dh)) v, with q, k, v projections of RMSNorm(x). */
    private static void attentionForward(RefSpec s, Map<String, double[]> P, int l, double[][][] x, int[][] tokens,
                                         LayerState st) {
        int B = x.length, d = s.d(), H = s.heads(), Hkv = s.kvHeads(), dh = s.headDim();
        int qDim = H * dh, kvDim = Hkv * dh, group = H / Hkv;
        double[] wNorm = P.get(attnNorm(l)), wq = P.get(attn(l, "q_proj")), wk = P.get(attn(l, "k_proj"));
        double[] wv = P.get(attn(l, "v_proj")), wo = P.get(attn(l, "o_proj"));
        double[] wqn = s.qkNorm() ? P.get(attn(l, "q_norm")) : null, wkn = s.qkNorm() ? P.get(attn(l, "k_norm")) : null;
        double scale = 1.0 / Math.sqrt(dh);
        st.x = x;
        st.a = new double[B][][];
        st.q = new double[B][][];
        st.k = new double[B][][];
        st.v = new double[B][][];
        st.qn = new double[B][][];
        st.kn = new double[B][][];
        st.qr = new double[B][][];
        st.kr = new double[B][][];
        st.o = new double[B][][];
        st.h = new double[B][][];
        st.rAttn = new double[B][];
        st.rQ = new double[B][];
        st.rK = new double[B][];
        st.att = new double[B][][][];
        for (int b = 0; b < B; b++) {
            int T = x[b].length;
            int[] doc = documentIds(tokens[b], s.eosId());
            st.a[b] = new double[T][];
            st.q[b] = new double[T][];
            st.k[b] = new double[T][];
            st.v[b] = new double[T][];
            st.qn[b] = new double[T][];
            st.kn[b] = new double[T][];
            st.qr[b] = new double[T][];
            st.kr[b] = new double[T][];
            st.o[b] = new double[T][qDim];
            st.h[b] = new double[T][];
            st.rAttn[b] = new double[T];
            st.rQ[b] = new double[T];
            st.rK[b] = new double[T];
            for (int t = 0; t < T; t++) {
                st.rAttn[b][t] = invRms(x[b][t], s.normEps());
                st.a[b][t] = rmsApply(x[b][t], wNorm, st.rAttn[b][t]);
                st.q[b][t] = matVec(wq, qDim, d, st.a[b][t]);
                st.k[b][t] = matVec(wk, kvDim, d, st.a[b][t]);
                st.v[b][t] = matVec(wv, kvDim, d, st.a[b][t]);
                if (s.qkNorm()) { // RMSNorm over the whole q [H·dh] and the whole k [Hkv·dh]
                    st.rQ[b][t] = invRms(st.q[b][t], s.normEps());
                    st.rK[b][t] = invRms(st.k[b][t], s.normEps());
                    st.qn[b][t] = rmsApply(st.q[b][t], wqn, st.rQ[b][t]);
                    st.kn[b][t] = rmsApply(st.k[b][t], wkn, st.rK[b][t]);
                } else {
                    st.qn[b][t] = st.q[b][t];
                    st.kn[b][t] = st.k[b][t];
                }
                st.qr[b][t] = rope(st.qn[b][t], H, dh, t, s.ropeTheta(), false);
                st.kr[b][t] = rope(st.kn[b][t], Hkv, dh, t, s.ropeTheta(), false);
            }
            // per query head hh (kv head hh / group): att[t][u] = softmax_{u <= t, same doc if docMask} q_t·k_u / sqrt(dh)
            st.att[b] = new double[H][T][T];
            for (int hh = 0; hh < H; hh++) {
                int qo = hh * dh, ko = (hh / group) * dh;
                for (int t = 0; t < T; t++) {
                    double[] row = st.att[b][hh][t];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int u = 0; u <= t; u++) {
                        if (s.docMask() && doc[u] != doc[t]) continue;
                        double sc = 0;
                        for (int i = 0; i < dh; i++) sc += st.qr[b][t][qo + i] * st.kr[b][u][ko + i];
                        row[u] = sc * scale;
                        max = Math.max(max, row[u]);
                    }
                    double sum = 0;
                    for (int u = 0; u <= t; u++) {
                        if (s.docMask() && doc[u] != doc[t]) continue;
                        row[u] = Math.exp(row[u] - max);
                        sum += row[u];
                    }
                    for (int u = 0; u <= t; u++) row[u] /= sum; // masked entries stay exactly 0
                    for (int u = 0; u <= t; u++)
                        for (int i = 0; i < dh; i++) st.o[b][t][qo + i] += row[u] * st.v[b][u][ko + i];
                }
            }
            for (int t = 0; t < T; t++) st.h[b][t] = add(x[b][t], matVec(wo, d, qDim, st.o[b][t]));
        }
    }

    /** The backward of {@link #attentionForward}: dh is d total / d h; returns d total / d x. */
    private static double[][][] attentionBackward(RefSpec s, Map<String, double[]> P, Map<String, double[]> G, int l,
                                                  LayerState st, double[][][] dh) {
        int B = dh.length, d = s.d(), H = s.heads(), Hkv = s.kvHeads(), hd = s.headDim();
        int qDim = H * hd, kvDim = Hkv * hd, group = H / Hkv;
        double[] wNorm = P.get(attnNorm(l)), wq = P.get(attn(l, "q_proj")), wk = P.get(attn(l, "k_proj"));
        double[] wv = P.get(attn(l, "v_proj")), wo = P.get(attn(l, "o_proj"));
        double[] gNorm = G.get(attnNorm(l)), gq = G.get(attn(l, "q_proj")), gk = G.get(attn(l, "k_proj"));
        double[] gv = G.get(attn(l, "v_proj")), go = G.get(attn(l, "o_proj"));
        double scale = 1.0 / Math.sqrt(hd);
        double[][][] dx = new double[B][][];
        for (int b = 0; b < B; b++) {
            int T = dh[b].length;
            double[][] dO = new double[T][qDim], dqr = new double[T][qDim], dkr = new double[T][kvDim];
            double[][] dv = new double[T][kvDim];
            for (int t = 0; t < T; t++) {
                outerAdd(go, d, qDim, dh[b][t], st.o[b][t]);
                matTVecAdd(wo, d, qDim, dh[b][t], dO[t]);
            }
            // o_t = Σ_u A_tu v_u; A = softmax(S): dS_tu = A_tu (dA_tu - Σ_u' A_tu' dA_tu'), S_tu = q_t·k_u / sqrt(dh)
            for (int hh = 0; hh < H; hh++) {
                int qo = hh * hd, ko = (hh / group) * hd;
                for (int t = 0; t < T; t++) {
                    double[] row = st.att[b][hh][t];
                    double[] dA = new double[t + 1];
                    double adA = 0;
                    for (int u = 0; u <= t; u++) {
                        for (int i = 0; i < hd; i++) {
                            dA[u] += dO[t][qo + i] * st.v[b][u][ko + i];
                            dv[u][ko + i] += row[u] * dO[t][qo + i];
                        }
                        adA += row[u] * dA[u];
                    }
                    for (int u = 0; u <= t; u++) {
                        double dS = row[u] * (dA[u] - adA) * scale;
                        for (int i = 0; i < hd; i++) {
                            dqr[t][qo + i] += dS * st.kr[b][u][ko + i];
                            dkr[u][ko + i] += dS * st.qr[b][t][qo + i];
                        }
                    }
                }
            }
            dx[b] = new double[T][];
            for (int t = 0; t < T; t++) {
                double[] dqn = rope(dqr[t], H, hd, t, s.ropeTheta(), true);
                double[] dkn = rope(dkr[t], Hkv, hd, t, s.ropeTheta(), true);
                double[] dq = dqn, dk = dkn;
                if (s.qkNorm()) {
                    dq = rmsBackward(st.q[b][t], P.get(attn(l, "q_norm")), st.rQ[b][t], dqn, G.get(attn(l, "q_norm")));
                    dk = rmsBackward(st.k[b][t], P.get(attn(l, "k_norm")), st.rK[b][t], dkn, G.get(attn(l, "k_norm")));
                }
                double[] a = st.a[b][t], da = new double[d];
                outerAdd(gq, qDim, d, dq, a);
                outerAdd(gk, kvDim, d, dk, a);
                outerAdd(gv, kvDim, d, dv[t], a);
                matTVecAdd(wq, qDim, d, dq, da);
                matTVecAdd(wk, kvDim, d, dk, da);
                matTVecAdd(wv, kvDim, d, dv[t], da);
                dx[b][t] = add(dh[b][t], rmsBackward(st.x[b][t], wNorm, st.rAttn[b][t], da, gNorm));
            }
        }
        return dx;
    }

    /**
     * Rotate-half RoPE of a vector of `heads` heads at position pos: within a head, pair (i, i + dh/2) turns by
     * pos·theta^(-2i/dh): x'_i = x_i cos - x_{i+dh/2} sin, x'_{i+dh/2} = x_{i+dh/2} cos + x_i sin. With transpose,
     * the inverse turn (the backward).
     */
    static double[] rope(double[] x, int heads, int dh, int pos, double theta, boolean transpose) {
        double[] y = new double[x.length];
        int half = dh / 2;
        for (int hh = 0; hh < heads; hh++) {
            for (int i = 0; i < half; i++) {
                double ang = pos * Math.pow(theta, -2.0 * i / dh);
                double c = Math.cos(ang), sn = transpose ? -Math.sin(ang) : Math.sin(ang);
                int lo = hh * dh + i, hi = lo + half;
                y[lo] = x[lo] * c - x[hi] * sn;
                y[hi] = x[hi] * c + x[lo] * sn;
            }
        }
        return y;
    }

    /** Document index per position: position 0 opens document 0, every later EOS token opens the next. */
    public static int[] documentIds(int[] seq, int eos) {
        int[] doc = new int[seq.length];
        for (int t = 1; t < seq.length; t++) doc[t] = doc[t - 1] + (seq[t] == eos ? 1 : 0);
        return doc;
    }

    // ---------------------------------------------------------------- routing and router losses

    /**
     * Routing of one layer (ALGORITHMS.md 2): kept experts, pools, softmax domain, top-k', gates, capacity drops;
     * and the layer's load-balance and router z-loss values with the constants of their gradients.
     */
    private static void route(RefSpec s, int l, int[][] tokens, RefDraws draws, LayerState st, double[] lbL,
                              double[] zL) {
        int B = tokens.length, E = s.experts();
        st.kept = new boolean[E];
        int[] subset = draws.subset() == null ? null : draws.subset()[l];
        if (subset == null) Arrays.fill(st.kept, true);
        else for (int e : subset) st.kept[e] = true;
        st.keptRouted = keptRouted(s, draws, l);
        int nKept = st.keptRouted.length; // E' of this layer's losses and capacity
        boolean[] keptRouted = new boolean[E];
        for (int e : st.keptRouted) keptRouted[e] = true;
        int kDrawn = draws.kPerLayer() == null ? s.k() - s.shared() : draws.kPerLayer()[l];
        st.kRouted = Math.min(kDrawn, nKept);

        st.domain = new boolean[B][][];
        st.p = new double[B][][];
        st.lse = new double[B][];
        st.picks = new int[B][][];
        st.gates = new double[B][][];
        st.dropped = new boolean[B][][];
        st.pools = draws.poolSizes() == null ? null : new int[B][][];
        for (int b = 0; b < B; b++) {
            int T = tokens[b].length;
            double[][] z = st.z[b];
            // allowed experts per token: the document's pool, or every kept routed expert
            boolean[][] allowed = new boolean[T][];
            if (draws.poolSizes() == null) {
                for (int t = 0; t < T; t++) allowed[t] = keptRouted;
            } else {
                int[] doc = documentIds(tokens[b], s.eosId());
                int docs = doc[T - 1] + 1;
                st.pools[b] = new int[docs][];
                for (int dc = 0; dc < docs; dc++) {
                    // u_e = Σ_{t in doc} softmax_kept(z'_t)_e; pool = top-P by u, ties to the lower index
                    double[] u = new double[E];
                    for (int t = 0; t < T; t++) {
                        if (doc[t] != dc) continue;
                        double[] pt = softmax(z[t], keptRouted);
                        for (int e = 0; e < E; e++) u[e] += pt[e];
                    }
                    int size = Math.min(draws.poolSizes()[l][b][dc], nKept);
                    int[] pool = topK(u, keptRouted, size);
                    Arrays.sort(pool);
                    st.pools[b][dc] = pool;
                    boolean[] mask = new boolean[E];
                    for (int e : pool) mask[e] = true;
                    for (int t = 0; t < T; t++) if (doc[t] == dc) allowed[t] = mask;
                }
            }
            st.domain[b] = new boolean[T][];
            st.p[b] = new double[T][];
            st.lse[b] = new double[T];
            st.picks[b] = new int[T][];
            st.gates[b] = new double[T][];
            st.dropped[b] = new boolean[T][];
            for (int t = 0; t < T; t++) {
                // p = softmax over the domain; picks = top-min(k', |allowed|) of the allowed by logit
                boolean[] dom = s.softmaxOverAll() ? keptRouted : allowed[t];
                st.domain[b][t] = dom;
                st.p[b][t] = softmax(z[t], dom);
                st.lse[b][t] = logSumExp(z[t], dom);
                int n = Math.min(st.kRouted, count(allowed[t]));
                int[] pk = topK(z[t], allowed[t], n);
                double[] g = new double[n];
                double sum = 0;
                for (int j = 0; j < n; j++) sum += g[j] = st.p[b][t][pk[j]];
                if (s.normalizeTopK()) for (int j = 0; j < n; j++) g[j] /= sum;
                st.picks[b][t] = pk;
                st.gates[b][t] = g;
                st.dropped[b][t] = new boolean[n];
            }
            // capacity per sequence: C = max(4, even-up(floor(k'·CF·T/E'))); first choices in token order, then
            // second choices, ...; an assignment ranked >= C at its expert is dropped
            if (s.capacityFactor() > 0) {
                int cap = (int) Math.floor(st.kRouted * s.capacityFactor() * T / nKept);
                if (cap % 2 != 0) cap++;
                cap = Math.max(4, cap);
                int[] filled = new int[E];
                for (int j = 0; j < st.kRouted; j++)
                    for (int t = 0; t < T; t++) {
                        if (j >= st.picks[b][t].length) continue;
                        int e = st.picks[b][t][j];
                        if (filled[e]++ >= cap) st.dropped[b][t][j] = true;
                    }
            }
        }

        // load balance: (E'/k') Σ_e c_e p̄_e / N per scope; d/dp_{t,e} = (E'/k') c_e / N² (times 1/B when local)
        st.tokens = 0;
        for (int[] seq : tokens) st.tokens += seq.length;
        st.lbGradP = new double[B][E];
        double ratio = (double) nKept / st.kRouted;
        if (s.lbLocal()) {
            for (int b = 0; b < B; b++) {
                double[] c = new double[E], pbar = new double[E];
                int n = tokens[b].length;
                accumulateCountsAndMeans(st, b, c, pbar, n);
                lbL[l] += ratio * dot(c, pbar) / n / B;
                for (int e = 0; e < E; e++) st.lbGradP[b][e] = ratio * c[e] / ((double) n * n) / B;
            }
        } else {
            double[] c = new double[E], pbar = new double[E];
            int n = st.tokens;
            for (int b = 0; b < B; b++) accumulateCountsAndMeans(st, b, c, pbar, n);
            lbL[l] = ratio * dot(c, pbar) / n;
            for (int b = 0; b < B; b++)
                for (int e = 0; e < E; e++) st.lbGradP[b][e] = ratio * c[e] / ((double) n * n);
        }
        // router z-loss: mean over all tokens of lse(z' over the domain)²
        for (int b = 0; b < B; b++) for (double v : st.lse[b]) zL[l] += v * v / st.tokens;
    }

    /** c_e += routed picks of sequence b (before drops); pbar_e += p_{t,e} / n over its tokens. */
    private static void accumulateCountsAndMeans(LayerState st, int b, double[] c, double[] pbar, int n) {
        for (int t = 0; t < st.p[b].length; t++) {
            for (int e : st.picks[b][t]) c[e] += 1;
            for (int e = 0; e < c.length; e++) pbar[e] += st.p[b][t][e] / n;
        }
    }

    /**
     * ERC of layer l over the kept routed experts ids (i, j index ids), value and gradient together:
     * ε_i = min_{j≠i} ||R_i - R_j|| / (2||R_i||) (constant), R̃_i = R_i ⊙ (1 + ε_i u_i), M[i,j] = ||W1_j R̃_i||,
     * L = (1/n²) Σ_i Σ_{j≠i} [max(M[i,j] - α M[i,i], 0) + max(M[j,i] - α M[i,i], 0)], α = 1 for n <= 64 else 0.5.
     * Adds scale·dL/dR (router rows) and scale·dL/dW1 to grads; returns {L, mean ε}. n < 2 gives {0, 0}.
     */
    private static double[] erc(RefSpec s, Map<String, double[]> P, int l, int[] ids, double[][] noise,
                                double[] epsOverride, double scale, Map<String, double[]> G, StringBuilder decisions) {
        int n = ids.length, d = s.d(), h = s.hidden();
        if (n < 2) return new double[] {0, 0};
        double[] wr = P.get(router(l));
        double[][] R = new double[n][], Rt = new double[n][], delta = new double[n][];
        for (int i = 0; i < n; i++) R[i] = Arrays.copyOfRange(wr, ids[i] * d, ids[i] * d + d);
        double[] epsilon = epsOverride != null ? epsOverride : ercEpsilons(s, P, l, ids);
        double epsMean = 0;
        for (int i = 0; i < n; i++) {
            double eps = epsilon[i];
            epsMean += eps / n;
            delta[i] = new double[d];
            for (int c = 0; c < d; c++) delta[i][c] = 1 + eps * noise[i][c];
            Rt[i] = mul(R[i], delta[i]);
        }
        double[][][] v = new double[n][n][];
        double[][] M = new double[n][n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                v[i][j] = matVec(P.get(expert(l, ids[j], "gate_proj")), h, d, Rt[i]);
                M[i][j] = norm(v[i][j]);
            }
        double alpha = s.ercAlpha() > 0 ? s.ercAlpha() : n <= 64 ? 1.0 : 0.5, loss = 0, w = 1.0 / ((double) n * n);
        double[][] dM = new double[n][n];
        decisions.append("erc").append(l).append(':');
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                double a = M[i][j] - alpha * M[i][i], c = M[j][i] - alpha * M[i][i];
                decisions.append(a > 0 ? '+' : '-').append(c > 0 ? '+' : '-');
                if (a > 0) {
                    loss += w * a;
                    dM[i][j] += w;
                    dM[i][i] -= w * alpha;
                }
                if (c > 0) {
                    loss += w * c;
                    dM[j][i] += w;
                    dM[i][i] -= w * alpha;
                }
            }
        decisions.append('\n');
        // M = ||v||, v = W1_j R̃_i: dv = dM v / M; dW1_j += dv ⊗ R̃_i; dR_i += (W1_jᵀ dv) ⊙ δ_i
        double[] gr = G.get(router(l));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                if (dM[i][j] == 0 || M[i][j] == 0) continue;
                double[] dv = scale(v[i][j], scale * dM[i][j] / M[i][j]);
                outerAdd(G.get(expert(l, ids[j], "gate_proj")), h, d, dv, Rt[i]);
                double[] dRt = new double[d];
                matTVecAdd(P.get(expert(l, ids[j], "gate_proj")), h, d, dv, dRt);
                for (int c = 0; c < d; c++) gr[ids[i] * d + c] += dRt[c] * delta[i][c];
            }
        return new double[] {loss, epsMean};
    }

    /** ε_i = min_{j≠i} ||R_i - R_j|| / (2||R_i||) over the router rows of ids (the kept routed experts). */
    public static double[] ercEpsilons(RefSpec s, Map<String, double[]> params, int l, int[] ids) {
        int n = ids.length, d = s.d();
        double[] wr = params.get(router(l));
        double[] eps = new double[n];
        for (int i = 0; i < n; i++) {
            double[] ri = Arrays.copyOfRange(wr, ids[i] * d, ids[i] * d + d);
            eps[i] = Double.POSITIVE_INFINITY;
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                double[] rj = Arrays.copyOfRange(wr, ids[j] * d, ids[j] * d + d);
                eps[i] = Math.min(eps[i], norm(sub(ri, rj)) / (2 * norm(ri)));
            }
        }
        return eps;
    }

    /** The kept routed expert ids of layer l, sorted: the subset's ids below E', or 0..E'-1. */
    public static int[] keptRouted(RefSpec s, RefDraws draws, int l) {
        int[] subset = draws == null || draws.subset() == null ? null : draws.subset()[l];
        if (subset == null) return java.util.stream.IntStream.range(0, s.routed()).toArray();
        return Arrays.stream(subset).filter(e -> e < s.routed()).toArray();
    }

    // ---------------------------------------------------------------- expert FFN (SwiGLU)

    /** FFN_e(m) = W2 (silu(W1 m) ⊙ W3 m). */
    private static double[] ffn(RefSpec s, Map<String, double[]> P, int l, int e, double[] m) {
        int d = s.d(), h = s.hidden();
        double[] a1 = matVec(P.get(expert(l, e, "gate_proj")), h, d, m);
        double[] a3 = matVec(P.get(expert(l, e, "up_proj")), h, d, m);
        double[] u = new double[h];
        for (int i = 0; i < h; i++) u[i] = silu(a1[i]) * a3[i];
        return matVec(P.get(expert(l, e, "down_proj")), d, h, u);
    }

    /**
     * Backward of FFN_e at m for dy = d total / d FFN_e(m): adds to the W1, W3, W2 gradients and to dm.
     * silu'(a) = σ(a) (1 + a (1 - σ(a))).
     */
    private static void ffnBackward(RefSpec s, Map<String, double[]> P, Map<String, double[]> G, int l, int e,
                                    double[] m, double[] dy, double[] dm) {
        int d = s.d(), h = s.hidden();
        double[] w1 = P.get(expert(l, e, "gate_proj")), w3 = P.get(expert(l, e, "up_proj"));
        double[] w2 = P.get(expert(l, e, "down_proj"));
        double[] a1 = matVec(w1, h, d, m), a3 = matVec(w3, h, d, m);
        double[] u = new double[h], du = new double[h], da1 = new double[h], da3 = new double[h];
        for (int i = 0; i < h; i++) u[i] = silu(a1[i]) * a3[i];
        outerAdd(G.get(expert(l, e, "down_proj")), d, h, dy, u);
        matTVecAdd(w2, d, h, dy, du);
        for (int i = 0; i < h; i++) {
            double sg = 1 / (1 + Math.exp(-a1[i]));
            da1[i] = du[i] * a3[i] * sg * (1 + a1[i] * (1 - sg));
            da3[i] = du[i] * silu(a1[i]);
        }
        outerAdd(G.get(expert(l, e, "gate_proj")), h, d, da1, m);
        outerAdd(G.get(expert(l, e, "up_proj")), h, d, da3, m);
        matTVecAdd(w1, h, d, da1, dm);
        matTVecAdd(w3, h, d, da3, dm);
    }

    // ---------------------------------------------------------------- small numeric helpers

    /** 1 / sqrt(mean(x²) + eps). */
    static double invRms(double[] x, double eps) {
        double ss = 0;
        for (double v : x) ss += v * v;
        return 1 / Math.sqrt(ss / x.length + eps);
    }

    /** RMSNorm with a known inverse RMS r: y_i = x_i w_i r. */
    static double[] rmsApply(double[] x, double[] w, double r) {
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = x[i] * w[i] * r;
        return y;
    }

    /** RMSNorm backward: dx_j = r w_j dy_j - r³ x_j / n · Σ_i dy_i w_i x_i; dw_i += dy_i x_i r. */
    static double[] rmsBackward(double[] x, double[] w, double r, double[] dy, double[] dw) {
        int n = x.length;
        double s = 0;
        for (int i = 0; i < n; i++) {
            s += dy[i] * w[i] * x[i];
            dw[i] += dy[i] * x[i] * r;
        }
        double[] dx = new double[n];
        for (int j = 0; j < n; j++) dx[j] = r * w[j] * dy[j] - r * r * r * x[j] / n * s;
        return dx;
    }

    /** y [rows] = W [rows, cols] x [cols]. */
    static double[] matVec(double[] w, int rows, int cols, double[] x) {
        double[] y = new double[rows];
        for (int r = 0; r < rows; r++) {
            double acc = 0;
            for (int c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
            y[r] = acc;
        }
        return y;
    }

    /** dx [cols] += Wᵀ dy, W [rows, cols]. */
    static void matTVecAdd(double[] w, int rows, int cols, double[] dy, double[] dx) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) dx[c] += w[r * cols + c] * dy[r];
    }

    /** dW [rows, cols] += dy [rows] ⊗ x [cols]. */
    static void outerAdd(double[] dw, int rows, int cols, double[] dy, double[] x) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) dw[r * cols + c] += dy[r] * x[c];
    }

    /** softmax of z over mask (0 outside); mask null = everything. */
    static double[] softmax(double[] z, boolean[] mask) {
        double lse = logSumExp(z, mask);
        double[] p = new double[z.length];
        for (int e = 0; e < z.length; e++) if (mask == null || mask[e]) p[e] = Math.exp(z[e] - lse);
        return p;
    }

    /** log Σ_{e in mask} exp z_e; mask null = everything. */
    static double logSumExp(double[] z, boolean[] mask) {
        double max = Double.NEGATIVE_INFINITY;
        for (int e = 0; e < z.length; e++) if (mask == null || mask[e]) max = Math.max(max, z[e]);
        double s = 0;
        for (int e = 0; e < z.length; e++) if (mask == null || mask[e]) s += Math.exp(z[e] - max);
        return max + Math.log(s);
    }

    /** The n highest-scoring indices of mask, best first, ties to the lower index. */
    static int[] topK(double[] score, boolean[] mask, int n) {
        List<Integer> ids = new ArrayList<>();
        for (int e = 0; e < score.length; e++) if (mask[e]) ids.add(e);
        ids.sort((a, b) -> score[a] != score[b] ? Double.compare(score[b], score[a]) : Integer.compare(a, b));
        int[] out = new int[n];
        for (int j = 0; j < n; j++) out[j] = ids.get(j);
        return out;
    }

    static double silu(double a) {
        return a / (1 + Math.exp(-a));
    }

    static int count(boolean[] mask) {
        int n = 0;
        for (boolean b : mask) if (b) n++;
        return n;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double norm(double[] a) {
        return Math.sqrt(dot(a, a));
    }

    static double[] add(double[] a, double[] b) {
        double[] y = new double[a.length];
        for (int i = 0; i < a.length; i++) y[i] = a[i] + b[i];
        return y;
    }

    static double[] sub(double[] a, double[] b) {
        double[] y = new double[a.length];
        for (int i = 0; i < a.length; i++) y[i] = a[i] - b[i];
        return y;
    }

    static double[] mul(double[] a, double[] b) {
        double[] y = new double[a.length];
        for (int i = 0; i < a.length; i++) y[i] = a[i] * b[i];
        return y;
    }

    static double[] scale(double[] a, double c) {
        double[] y = new double[a.length];
        for (int i = 0; i < a.length; i++) y[i] = a[i] * c;
        return y;
    }

    /** y += c x. */
    static void axpy(double c, double[] x, double[] y) {
        for (int i = 0; i < x.length; i++) y[i] += c * x[i];
    }

    static double mean(double[] a) {
        double s = 0;
        for (double v : a) s += v / a.length;
        return s;
    }

    // ---------------------------------------------------------------- inputs and the result

    private static void checkInputs(RefSpec s, Map<String, double[]> params, int[][] tokens, RefDraws draws) {
        for (Map.Entry<String, int[]> e : shapes(s).entrySet()) {
            double[] w = params.get(e.getKey());
            if (w == null) throw new IllegalArgumentException("RefModel: parameter '" + e.getKey() + "' is missing");
            if (w.length != size(e.getValue()))
                throw new IllegalArgumentException("RefModel: parameter '" + e.getKey() + "' has " + w.length
                        + " values, shape " + Arrays.toString(e.getValue()) + " needs " + size(e.getValue()));
        }
        if (tokens.length == 0) throw new IllegalArgumentException("RefModel: no sequences");
        for (int b = 0; b < tokens.length; b++) {
            if (tokens[b].length == 0) throw new IllegalArgumentException("RefModel: sequence " + b + " is empty");
            for (int t = 0; t < tokens[b].length; t++)
                if (tokens[b][t] < 0 || tokens[b][t] >= s.vocab())
                    throw new IllegalArgumentException("RefModel: token " + tokens[b][t] + " at sequence " + b
                            + " position " + t + " is outside vocab [0, " + s.vocab() + ")");
        }
        for (int l = 0; l < s.layers(); l++) {
            int[] subset = draws.subset() == null ? null : draws.subset()[l];
            int keptRouted = s.routed();
            if (subset != null) {
                keptRouted = 0;
                for (int i = 0; i < subset.length; i++) {
                    if (subset[i] < 0 || subset[i] >= s.experts() || (i > 0 && subset[i] <= subset[i - 1]))
                        throw new IllegalArgumentException("RefModel: subset of layer " + l + " "
                                + Arrays.toString(subset) + " must be sorted distinct ids in [0, " + s.experts() + ")");
                    if (subset[i] < s.routed()) keptRouted++;
                }
            }
            if (keptRouted == 0) throw new IllegalArgumentException("RefModel: layer " + l + " keeps no routed expert");
            if (draws.kPerLayer() != null && draws.kPerLayer()[l] < 1)
                throw new IllegalArgumentException("RefModel: kPerLayer[" + l + "] = " + draws.kPerLayer()[l] + ", must be >= 1");
            if (draws.poolSizes() != null)
                for (int b = 0; b < tokens.length; b++) {
                    int docs = documentIds(tokens[b], s.eosId())[tokens[b].length - 1] + 1;
                    int[] sizes = draws.poolSizes()[l][b];
                    if (sizes.length < docs)
                        throw new IllegalArgumentException("RefModel: poolSizes[" + l + "][" + b + "] has " + sizes.length
                                + " entries, sequence " + b + " has " + docs + " documents");
                    for (int p : sizes) if (p < 1) throw new IllegalArgumentException("RefModel: pool size " + p + " < 1");
                }
            if (draws.ercNoise() != null && draws.ercNoise()[l].length < keptRouted)
                throw new IllegalArgumentException("RefModel: ercNoise[" + l + "] has " + draws.ercNoise()[l].length
                        + " rows, layer keeps " + keptRouted + " routed experts");
        }
    }

    private static RefResult result(RefSpec s, LayerState[] st, int[][] tokens, double ce, double outZ, double lb,
                                    double z, double erc, double total, double[] lbL, double[] zL, double[] ercL,
                                    double[] ercEps, double[][][] logits, Map<String, double[]> grads,
                                    StringBuilder ercDecisions) {
        int L = st.length, B = tokens.length, E = s.experts();
        int maxT = 0;
        for (int[] seq : tokens) maxT = Math.max(maxT, seq.length);
        int[] kRouted = new int[L];
        int[][] counts = new int[L][E], keptCounts = new int[L][E], dropsAt = new int[L][maxT];
        int[][][][] experts = new int[L][B][][], pools = st[0].pools == null ? null : new int[L][][][];
        double[][][][] gates = new double[L][B][][];
        boolean[][][][] dropped = new boolean[L][B][][];
        StringBuilder decisions = new StringBuilder();
        for (int l = 0; l < L; l++) {
            LayerState ls = st[l];
            kRouted[l] = ls.kRouted;
            if (pools != null) pools[l] = ls.pools;
            decisions.append("layer").append(l).append(" pools ").append(Arrays.deepToString(ls.pools)).append('\n');
            for (int b = 0; b < B; b++) {
                int T = tokens[b].length;
                experts[l][b] = new int[T][];
                gates[l][b] = new double[T][];
                dropped[l][b] = new boolean[T][];
                for (int t = 0; t < T; t++) {
                    int[] pk = ls.picks[b][t];
                    int slots = pk.length;
                    for (int e = s.routed(); e < E; e++) if (ls.kept[e]) slots++;
                    experts[l][b][t] = Arrays.copyOf(pk, slots);
                    gates[l][b][t] = Arrays.copyOf(ls.gates[b][t], slots);
                    dropped[l][b][t] = Arrays.copyOf(ls.dropped[b][t], slots);
                    for (int j = 0; j < pk.length; j++) {
                        counts[l][pk[j]]++;
                        if (ls.dropped[b][t][j]) dropsAt[l][t]++;
                        else keptCounts[l][pk[j]]++;
                    }
                    for (int e = s.routed(), j = pk.length; e < E; e++) {
                        if (!ls.kept[e]) continue;
                        experts[l][b][t][j] = e;
                        gates[l][b][t][j++] = 1.0;
                        counts[l][e]++;
                        keptCounts[l][e]++;
                    }
                    decisions.append(Arrays.toString(pk)).append(Arrays.toString(ls.dropped[b][t]));
                }
                decisions.append('\n');
            }
        }
        decisions.append(ercDecisions);
        return new RefResult(ce, outZ, lb, z, erc, total, lbL, zL, ercL, ercEps, kRouted, counts, keptCounts, logits,
                experts, gates, dropped, pools, dropsAt, grads, decisions.toString());
    }
}
