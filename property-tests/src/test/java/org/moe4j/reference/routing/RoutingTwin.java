package org.moe4j.reference.routing;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * Plain float64 routing, written from ALGORITHMS.md sections 2-3 without sharing code with the engine's Router.
 * Rows are double[E]; "allowed"/"domain" are boolean[E] masks over routed experts.
 */
public final class RoutingTwin {
    private RoutingTwin() {}

    /** Documents as [start, end) pairs: each sequence start, and each EOS token, opens one. */
    public static List<int[]> documents(int[] seqStart, int sequences, int[] tokens, int eos, boolean split) {
        List<int[]> docs = new ArrayList<>();
        for (int i = 0; i < sequences; i++) {
            int start = seqStart[i];
            for (int t = seqStart[i] + 1; t < seqStart[i + 1]; t++) {
                if (split && tokens[t] == eos) {
                    docs.add(new int[] {start, t});
                    start = t;
                }
            }
            docs.add(new int[] {start, seqStart[i + 1]});
        }
        return docs;
    }

    /** softmax of z over mask (0 outside). */
    public static double[] softmax(double[] z, boolean[] mask) {
        double m = Double.NEGATIVE_INFINITY;
        for (int e = 0; e < z.length; e++) if (mask[e]) m = Math.max(m, z[e]);
        double[] p = new double[z.length];
        double s = 0;
        for (int e = 0; e < z.length; e++) if (mask[e]) s += (p[e] = Math.exp(z[e] - m));
        for (int e = 0; e < z.length; e++) p[e] /= s;
        return p;
    }

    public static double logsumexp(double[] z, boolean[] mask) {
        double m = Double.NEGATIVE_INFINITY;
        for (int e = 0; e < z.length; e++) if (mask[e]) m = Math.max(m, z[e]);
        double s = 0;
        for (int e = 0; e < z.length; e++) if (mask[e]) s += Math.exp(z[e] - m);
        return m + Math.log(s);
    }

    /** u_e = Σ_{t in doc} softmax_kept(z_t)_e. */
    public static double[] poolScores(double[][] z, int a, int b, boolean[] kept) {
        double[] u = new double[kept.length];
        for (int t = a; t < b; t++) {
            double[] p = softmax(z[t], kept);
            for (int e = 0; e < u.length; e++) u[e] += p[e];
        }
        return u;
    }

    /** Experts of kept sorted by score descending, ties to the lower index. */
    public static Integer[] ranked(double[] score, boolean[] kept) {
        return java.util.stream.IntStream.range(0, kept.length).filter(e -> kept[e]).boxed()
                .sorted(Comparator.<Integer>comparingDouble(e -> -score[e]).thenComparingInt(e -> e))
                .toArray(Integer[]::new);
    }

    /** top-k' routed picks among allowed by logit (ties lower index); fewer if allowed is smaller. */
    public static int[] topK(double[] z, boolean[] allowed, int kp) {
        Integer[] r = ranked(z, allowed);
        int n = Math.min(kp, r.length);
        int[] out = new int[n];
        for (int j = 0; j < n; j++) out[j] = r[j];
        return out;
    }

    /** Gates of fixed picks: p_e over domain, or p_e / Σ_picked p when normalised. */
    public static double[] gates(double[] z, boolean[] domain, int[] picks, boolean normalize) {
        double[] p = softmax(z, domain);
        double[] g = new double[picks.length];
        double s = 0;
        for (int j = 0; j < picks.length; j++) s += (g[j] = p[picks[j]]);
        if (normalize) for (int j = 0; j < picks.length; j++) g[j] /= s;
        return g;
    }

    /** d(Σ_j dg_j g_j)/dz for fixed picks, by the explicit Jacobian of the (normalised) masked softmax. */
    public static double[] gatesBackward(double[] z, boolean[] domain, int[] picks, boolean normalize, double[] dg) {
        int E = z.length;
        double[] p = softmax(z, domain);
        double[] dz = new double[E];
        // dp_e/dz_i = p_e (δ_ei - p_i) on the domain
        double[] dp = new double[E];
        if (!normalize) {
            for (int j = 0; j < picks.length; j++) dp[picks[j]] += dg[j];
        } else {
            double s = 0;
            for (int pk : picks) s += p[pk];
            // g_j = p_j / S: dg_j/dp_i = δ_ji / S - p_j / S² for i picked
            for (int j = 0; j < picks.length; j++)
                for (int i = 0; i < picks.length; i++)
                    dp[picks[i]] += dg[j] * ((i == j ? 1.0 / s : 0.0) - p[picks[j]] / (s * s));
        }
        for (int i = 0; i < E; i++) {
            if (!domain[i]) continue;
            for (int e = 0; e < E; e++) if (domain[e]) dz[i] += dp[e] * p[e] * ((e == i ? 1 : 0) - p[i]);
        }
        return dz;
    }

    /** C = max(4, even-ceil(floor(k'·CF·T/E'))). */
    public static int capacity(int kp, double cf, int groupTokens, int keptRouted) {
        int c = (int) Math.floor(kp * cf * groupTokens / keptRouted);
        if (c % 2 == 1) c += 1;
        return Math.max(4, c);
    }

    /**
     * Drops by the stated order, written as a sort: all routed assignments of the group, ordered by (rank j,
     * token); an assignment is dropped when C earlier ones in that order already went to its expert.
     */
    public static boolean[] drops(int[] expert, int kTot, int kp, int[] seqStart, int sequences, double cf, int keptRouted) {
        boolean[] dropped = new boolean[expert.length];
        if (cf <= 0) return dropped;
        for (int g = 0; g < sequences; g++) {
            int a = seqStart[g], b = seqStart[g + 1];
            int c = capacity(kp, cf, b - a, keptRouted);
            List<int[]> order = new ArrayList<>(); // {j, t}
            for (int t = a; t < b; t++) for (int j = 0; j < kp; j++) if (expert[t * kTot + j] >= 0) order.add(new int[] {j, t});
            order.sort(Comparator.<int[]>comparingInt(x -> x[0]).thenComparingInt(x -> x[1]));
            java.util.Map<Integer, Integer> seen = new java.util.HashMap<>();
            for (int[] x : order) {
                int slot = x[1] * kTot + x[0];
                int n = seen.merge(expert[slot], 1, Integer::sum);
                if (n > c) dropped[slot] = true;
            }
        }
        return dropped;
    }

    /** Switch LB over tokens [a,b): (E'/k')·Σ_e c_e·p̄_e / N, p the probs [T][E], c from picks (before drops). */
    public static double loadBalance(double[][] p, int[][] picks, int a, int b, int keptRouted, int kp) {
        int E = p[0].length;
        double[] c = new double[E], pbar = new double[E];
        int n = b - a;
        for (int t = a; t < b; t++) {
            for (int e : picks[t]) c[e] += 1;
            for (int e = 0; e < E; e++) pbar[e] += p[t][e] / n;
        }
        double s = 0;
        for (int e = 0; e < E; e++) s += c[e] * pbar[e];
        return (double) keptRouted / kp * s / n;
    }

    /** Loss-side gradient of loadBalance wrt logits, domains per token, c constant. */
    public static double[][] loadBalanceGrad(double[][] z, boolean[][] domain, int[][] picks, int a, int b,
                                              int keptRouted, int kp, double scale) {
        int E = z[0].length, n = b - a;
        double[] c = new double[E];
        for (int t = a; t < b; t++) for (int e : picks[t]) c[e] += 1;
        double[][] dz = new double[z.length][E];
        for (int t = a; t < b; t++) {
            double[] p = softmax(z[t], domain[t]);
            for (int i = 0; i < E; i++) {
                if (!domain[t][i]) continue;
                double s = 0;
                for (int e = 0; e < E; e++) if (domain[t][e]) s += c[e] * p[e] * ((e == i ? 1 : 0) - p[i]);
                dz[t][i] = scale * (double) keptRouted / kp * s / ((double) n * n);
            }
        }
        return dz;
    }

    /** A copy with rows as double. */
    public static double[][] rows(float[] logits, int T, int E) {
        double[][] z = new double[T][E];
        for (int t = 0; t < T; t++) for (int e = 0; e < E; e++) z[t][e] = logits[t * E + e];
        return z;
    }

    public static boolean[] mask(int E, java.util.function.IntPredicate in) {
        boolean[] m = new boolean[E];
        for (int e = 0; e < E; e++) m[e] = in.test(e);
        return m;
    }

    public static String show(boolean[] m) {
        return Arrays.toString(m);
    }
}
