package org.moe4j.props.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Random;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.routing.ExpertSet;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.engine.routing.RoutingRng;
import org.moe4j.reference.routing.RoutingTwin;

/**
 * The routing pipeline against the float64 twin on random small shapes: T 1..64 over 1..3 sequences, E 2..40,
 * s 0..2, k' up to E', random EOS positions, pools (none / sampled / given), subsets, capacity, normalisation.
 */
class RoutingProperties {
    static final int EOS = 1;

    /** One random routing problem and the engine's answer to it. */
    static final class Case {
        final Random rnd;
        int T, E, s, kp, sequences, poolMode; // poolMode 0 none, 1 sampled, 2 given
        int poolMin, poolMax;
        int[] seqStart, tokens, given;
        float[] logits;
        ExpertSet subset;
        boolean normalize, overAll;
        double cf;
        Router router;
        Routing r;
        RoutingControl ctl;

        Case(long seed) {
            rnd = new Random(seed);
            sequences = 1 + rnd.nextInt(3);
            T = sequences + rnd.nextInt(65 - sequences);
            if (rnd.nextInt(4) == 0) T = sequences; // single-token sequences
            seqStart = new int[sequences + 1];
            for (int i = 1; i < sequences; i++) seqStart[i] = seqStart[i - 1] + 1 + rnd.nextInt(T - seqStart[i - 1] - (sequences - i));
            seqStart[sequences] = T;
            E = 2 + rnd.nextInt(39);
            s = Math.min(E - 1, rnd.nextInt(3));
            kp = 1 + rnd.nextInt(E - s);
            tokens = new int[T];
            for (int t = 0; t < T; t++) tokens[t] = rnd.nextInt(8) == 0 ? EOS : 2 + rnd.nextInt(50);
            logits = new float[T * E];
            boolean coarse = rnd.nextInt(4) == 0; // few distinct values: exact ties in top-k and pools
            for (int i = 0; i < logits.length; i++) logits[i] = coarse ? rnd.nextInt(3) : (float) (rnd.nextGaussian() * 2);
            normalize = rnd.nextBoolean();
            overAll = rnd.nextInt(4) == 0;
            cf = new double[] {0, 0, 0.5, 1.0, 1.25, 2.0}[rnd.nextInt(6)];
            poolMode = rnd.nextInt(3);
            ctl = new RoutingControl().fixedK(kp).capacityFactor(cf).rng(new RoutingRng(seed));
            int routed = E - s;
            if (rnd.nextInt(3) == 0) {
                subset = new ExpertSet(E);
                subset.add(rnd.nextInt(routed));
                for (int e = 0; e < E; e++) if (rnd.nextBoolean()) subset.add(e);
                ctl.subset(subset);
            }
            if (poolMode == 1) {
                poolMin = 1 + rnd.nextInt(routed);
                poolMax = poolMin + rnd.nextInt(routed + 2 - poolMin);
                ctl.sampledPools(poolMin, poolMax);
            } else if (poolMode == 2) {
                given = new int[T];
                for (int i = 0; i < T; i++) given[i] = 1 + rnd.nextInt(routed + 1);
                ctl.givenPools(given);
            }
            router = new Router(E, s, normalize, overAll, EOS, 64, 3);
            r = router.newRouting();
            router.forward(logits, T, seqStart, sequences, tokens, ctl, r);
        }

        boolean kept(int e) {
            return e < E - s && (subset == null || subset.contains(e));
        }

        int keptCount() {
            int n = 0;
            for (int e = 0; e < E; e++) if (kept(e)) n++;
            return n;
        }

        boolean[] allowed(int t) {
            ExpertSet p = r.pool[r.docOfToken[t]];
            return RoutingTwin.mask(E, p::contains);
        }

        boolean[] domain(int t) {
            return overAll ? RoutingTwin.mask(E, this::kept) : allowed(t);
        }

        /** The non-empty routed picks of token t, in rank order. */
        int[] picks(int t) {
            int n = 0;
            while (n < r.kRouted() && r.expert[t * r.kTot() + n] >= 0) n++;
            int[] p = new int[n];
            for (int j = 0; j < n; j++) p[j] = r.expert[t * r.kTot() + j];
            return p;
        }
    }

    /** Experts e and f have the same logit at every token of [a, b): their u are equal bit for bit. */
    static boolean sameColumns(float[] z, int E, int a, int b, int e, int f) {
        for (int t = a; t < b; t++) if (z[t * E + e] != z[t * E + f]) return false;
        return true;
    }

    static void close(double expected, double actual, double tol, String what) {
        assertTrue(Math.abs(expected - actual) <= tol * (1 + Math.abs(expected)),
                what + ": expected " + expected + ", got " + actual);
    }

    @Property(tries = 300)
    void documentsPoolsAndPicksMatchTheTwin(@ForAll long seed) {
        Case c = new Case(seed);
        Routing r = c.r;
        int ep = c.keptCount();
        assertEquals(ep, r.routedKept());
        assertEquals(Math.min(c.kp, ep), r.kRouted());
        double[][] z = RoutingTwin.rows(c.logits, c.T, c.E);
        List<int[]> docs = RoutingTwin.documents(c.seqStart, c.sequences, c.tokens, EOS, c.poolMode != 0);
        assertEquals(docs.size(), r.documents());
        boolean[] keptMask = RoutingTwin.mask(c.E, c::kept);
        // k' is fixed here, so the rng's draws are the pool sizes, one per document in order
        RoutingRng replay = new RoutingRng(seed);
        int[] sampled = new int[docs.size()];
        for (int d = 0; d < sampled.length; d++) sampled[d] = c.poolMode == 1 ? replay.nextInt(c.poolMin, c.poolMax) : 0;
        for (int d = 0; d < docs.size(); d++) {
            int a = docs.get(d)[0], b = docs.get(d)[1];
            assertEquals(a, r.docStart[d]);
            assertEquals(b, r.docStart[d + 1]);
            ExpertSet pool = r.pool[d];
            for (int e = 0; e < c.E; e++) if (pool.contains(e)) assertTrue(c.kept(e), "pool member " + e + " is not kept");
            int size = pool.size();
            if (c.poolMode == 0) assertEquals(ep, size);
            else if (c.poolMode == 2) assertEquals(Math.min(c.given[d], ep), size);
            else assertEquals(Math.min(sampled[d], ep), size, "sampled pool size of document " + d);
            if (c.poolMode != 0) {
                // top-P by u (twin), up to float64 round-off between the two sums
                double[] u = RoutingTwin.poolScores(z, a, b, keptMask);
                for (int e = 0; e < c.E; e++) {
                    if (!pool.contains(e)) continue;
                    for (int f = 0; f < c.E; f++) {
                        if (!c.kept(f) || pool.contains(f)) continue;
                        assertTrue(u[e] > u[f] - 1e-9,
                                "pool member " + e + " (u " + u[e] + ") ranks below non-member " + f + " (u " + u[f] + ")");
                        if (sameColumns(c.logits, c.E, a, b, e, f)) assertTrue(e < f, "tie must go to the lower index");
                    }
                }
            }
        }
        int kTot = r.kTot();
        assertEquals(r.kRouted() + c.s, kTot);
        for (int t = 0; t < c.T; t++) {
            boolean[] allowed = c.allowed(t);
            int[] want = RoutingTwin.topK(z[t], allowed, r.kRouted());
            int[] got = c.picks(t);
            assertArrayEquals(want, got, "picks of token " + t);
            for (int j = got.length; j < r.kRouted(); j++) assertEquals(-1, r.expert[t * kTot + j]);
            for (int e : got) {
                assertTrue(r.pool[r.docOfToken[t]].contains(e), "expert " + e + " outside the document pool");
                if (c.subset != null) assertTrue(c.subset.contains(e), "expert " + e + " outside the subset");
            }
            double[] g = RoutingTwin.gates(z[t], c.domain(t), got, c.normalize);
            double sum = 0;
            for (int j = 0; j < got.length; j++) {
                close(g[j], r.gate[t * kTot + j], 1e-5, "gate " + t + "," + j);
                sum += r.gate[t * kTot + j];
            }
            if (c.normalize) close(1.0, sum, 1e-5, "normalised gate sum");
            double[] p = RoutingTwin.softmax(z[t], c.domain(t));
            for (int e = 0; e < c.E; e++) close(p[e], r.prob[t * c.E + e], 1e-5, "prob " + t + "," + e);
            close(RoutingTwin.logsumexp(z[t], c.domain(t)), r.lse[t], 1e-6, "lse " + t);
            for (int j = 0; j < c.s; j++) {
                assertEquals(c.E - c.s + j, r.expert[t * kTot + r.kRouted() + j]);
                assertEquals(1f, r.gate[t * kTot + r.kRouted() + j]);
            }
        }
    }

    @Property(tries = 300)
    void capacityDropsAndPermutationMatchTheTwin(@ForAll long seed) {
        Case c = new Case(seed);
        Routing r = c.r;
        int kTot = r.kTot(), n = c.T * kTot;
        int[] expert = java.util.Arrays.copyOf(r.expert, n);
        boolean[] want = RoutingTwin.drops(expert, kTot, r.kRouted(), c.seqStart, c.sequences, c.cf, r.routedKept());
        int drops = 0;
        int[] atPos = new int[c.T];
        for (int i = 0; i < n; i++) {
            assertEquals(want[i], r.dropped[i], "dropped flag of slot " + i);
            if (want[i]) {
                drops++;
                int t = i / kTot;
                atPos[t - c.seqStart[r.sequenceOf(t)]]++;
                assertTrue(i % kTot < r.kRouted(), "a shared slot was dropped");
            }
        }
        assertEquals(drops, r.dropCount());
        for (int p = 0; p < c.T; p++) assertEquals(atPos[p], r.dropsAtPosition[p], "drops at position " + p);
        // no expert over capacity in any group
        for (int g = 0; g < c.sequences; g++) {
            if (c.cf <= 0) break;
            int cap = RoutingTwin.capacity(r.kRouted(), c.cf, c.seqStart[g + 1] - c.seqStart[g], r.routedKept());
            assertEquals(cap, r.capacity[g]);
            int[] cnt = new int[c.E];
            for (int t = c.seqStart[g]; t < c.seqStart[g + 1]; t++)
                for (int j = 0; j < r.kRouted(); j++) if (r.expert[t * kTot + j] >= 0 && !r.dropped[t * kTot + j]) cnt[r.expert[t * kTot + j]]++;
            for (int e = 0; e < c.E; e++) assertTrue(cnt[e] <= cap, "expert " + e + " holds " + cnt[e] + " > C = " + cap);
        }
        // permutation: grouped by expert, token order inside, a bijection onto the kept slots
        int kept = 0;
        int[] before = new int[c.E], after = new int[c.E];
        for (int i = 0; i < n; i++) {
            if (expert[i] < 0) continue;
            before[expert[i]]++;
            if (!r.dropped[i]) {
                after[expert[i]]++;
                kept++;
            }
        }
        assertArrayEquals(before, r.countBefore);
        assertArrayEquals(after, r.countAfter);
        assertEquals(kept, r.keptSlots());
        assertEquals(0, r.offsets[0]);
        boolean[] seen = new boolean[n];
        for (int e = 0; e < c.E; e++) {
            assertEquals(r.offsets[e] + after[e], r.offsets[e + 1]);
            for (int i = r.offsets[e]; i < r.offsets[e + 1]; i++) {
                int slot = r.perm[i];
                assertEquals(e, r.expert[slot]);
                assertFalse(r.dropped[slot]);
                assertFalse(seen[slot], "slot " + slot + " twice");
                seen[slot] = true;
                if (i > r.offsets[e]) assertTrue(r.perm[i - 1] < slot, "token order inside expert " + e);
            }
        }
        // dispatch (gather rows by perm) then combine (scatter-add with unit gates) = identity on token rows,
        // each row counted once per kept slot
        int d = 1 + c.rnd.nextInt(7);
        double[] x = new double[c.T * d], buf = new double[kept * d], y = new double[c.T * d];
        for (int i = 0; i < x.length; i++) x[i] = c.rnd.nextInt(2001) - 1000; // integers: sums are exact
        for (int i = 0; i < kept; i++) System.arraycopy(x, (r.perm[i] / kTot) * d, buf, i * d, d);
        for (int i = 0; i < kept; i++) for (int q = 0; q < d; q++) y[(r.perm[i] / kTot) * d + q] += buf[i * d + q];
        for (int t = 0; t < c.T; t++) {
            int slots = 0;
            for (int j = 0; j < kTot; j++) if (r.expert[t * kTot + j] >= 0 && !r.dropped[t * kTot + j]) slots++;
            for (int q = 0; q < d; q++) assertEquals(slots * x[t * d + q], y[t * d + q], 0.0, "row " + t);
        }
    }

    @Property(tries = 200)
    void backwardMatchesTheTwinAndTheTwinMatchesFiniteDifferences(@ForAll long seed) {
        Case c = new Case(seed);
        Routing r = c.r;
        int kTot = r.kTot();
        float[] dGate = new float[c.T * kTot];
        for (int i = 0; i < dGate.length; i++) dGate[i] = (float) c.rnd.nextGaussian();
        float[] dLogits = new float[c.T * c.E];
        java.util.Arrays.fill(dLogits, Float.NaN); // overwritten, not accumulated
        c.router.backward(r, dGate, dLogits);
        double[][] z = RoutingTwin.rows(c.logits, c.T, c.E);
        for (int t = 0; t < c.T; t++) {
            int[] picks = c.picks(t);
            double[] dg = new double[picks.length];
            for (int j = 0; j < picks.length; j++) dg[j] = r.dropped[t * kTot + j] ? 0 : dGate[t * kTot + j];
            boolean[] dom = c.domain(t);
            double[] want = RoutingTwin.gatesBackward(z[t], dom, picks, c.normalize, dg);
            for (int e = 0; e < c.E; e++)
                assertEquals(want[e], dLogits[t * c.E + e], 1e-5 * (1 + Math.abs(want[e])), "dLogits " + t + "," + e);
            if (t < 3) {
                // twin vs central differences of f(z) = Σ_j dg_j g_j(z), picks fixed
                double h = 1e-6;
                for (int e = 0; e < c.E; e++) {
                    double[] zp = z[t].clone(), zm = z[t].clone();
                    zp[e] += h;
                    zm[e] -= h;
                    double fd = (dot(dg, RoutingTwin.gates(zp, dom, picks, c.normalize))
                            - dot(dg, RoutingTwin.gates(zm, dom, picks, c.normalize))) / (2 * h);
                    assertEquals(fd, want[e], 1e-7 * (1 + Math.abs(fd)), "twin vs FD at " + t + "," + e);
                }
            }
        }
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    @Property(tries = 200)
    void auxLossesMatchTheTwin(@ForAll long seed) {
        Case c = new Case(seed);
        Routing r = c.r;
        double[][] z = RoutingTwin.rows(c.logits, c.T, c.E);
        boolean[][] dom = new boolean[c.T][];
        double[][] p = new double[c.T][];
        int[][] picks = new int[c.T][];
        for (int t = 0; t < c.T; t++) {
            dom[t] = c.domain(t);
            p[t] = RoutingTwin.softmax(z[t], dom[t]);
            picks[t] = c.picks(t);
        }
        int ep = r.routedKept(), kp = r.kRouted();
        for (LbScope scope : LbScope.values()) {
            int groups = scope == LbScope.GLOBAL ? 1 : c.sequences;
            double want = 0;
            double[][] grad = new double[c.T][c.E];
            for (int g = 0; g < groups; g++) {
                int a = scope == LbScope.GLOBAL ? 0 : c.seqStart[g], b = scope == LbScope.GLOBAL ? c.T : c.seqStart[g + 1];
                want += RoutingTwin.loadBalance(p, picks, a, b, ep, kp) / groups;
                double[][] gg = RoutingTwin.loadBalanceGrad(z, dom, picks, a, b, ep, kp, 1.0 / groups);
                for (int t = a; t < b; t++) for (int e = 0; e < c.E; e++) grad[t][e] += gg[t][e];
            }
            close(want, c.router.loadBalanceLoss(r, scope), 1e-5, scope + " LB");
            double w = 0.5 + c.rnd.nextDouble();
            float[] dl = new float[c.T * c.E];
            java.util.Arrays.fill(dl, 0.25f); // accumulated into
            c.router.loadBalanceBackward(r, scope, w, dl);
            for (int t = 0; t < c.T; t++)
                for (int e = 0; e < c.E; e++)
                    assertEquals(0.25 + w * grad[t][e], dl[t * c.E + e], 1e-5 * (1 + Math.abs(w * grad[t][e])), scope + " dLB " + t + "," + e);
            // twin gradient vs central differences of the twin loss (c fixed) for a few entries
            for (int q = 0; q < 4; q++) {
                int t = c.rnd.nextInt(c.T), e = c.rnd.nextInt(c.E);
                double h = 1e-6;
                double fd = (lbAt(z, dom, picks, t, e, h, scope, c, ep, kp) - lbAt(z, dom, picks, t, e, -h, scope, c, ep, kp)) / (2 * h);
                assertEquals(fd, grad[t][e], 1e-6 * (1 + Math.abs(fd)), scope + " twin LB vs FD at " + t + "," + e);
            }
        }
        // z-loss
        double zw = 0;
        for (int t = 0; t < c.T; t++) {
            double l = RoutingTwin.logsumexp(z[t], dom[t]);
            zw += l * l / c.T;
        }
        close(zw, c.router.zLoss(r), 1e-5, "z-loss");
        float[] dl = new float[c.T * c.E];
        c.router.zLossBackward(r, 2.0, dl);
        for (int t = 0; t < c.T; t++) {
            double l = RoutingTwin.logsumexp(z[t], dom[t]);
            for (int e = 0; e < c.E; e++) {
                double want = 2.0 * 2 * l / c.T * p[t][e];
                assertEquals(want, dl[t * c.E + e], 1e-5 * (1 + Math.abs(want)), "dz-loss " + t + "," + e);
                if (t == 0) {
                    double h = 1e-6;
                    double[] zp = z[t].clone(), zm = z[t].clone();
                    zp[e] += h;
                    zm[e] -= h;
                    double lp = RoutingTwin.logsumexp(zp, dom[t]), lm = RoutingTwin.logsumexp(zm, dom[t]);
                    double fd = 2.0 * (lp * lp - lm * lm) / c.T / (2 * h);
                    assertEquals(fd, want, 1e-6 * (1 + Math.abs(fd)), "twin z-loss vs FD at " + e);
                }
            }
        }
    }

    private static double lbAt(double[][] z, boolean[][] dom, int[][] picks, int t, int e, double h, LbScope scope,
                               Case c, int ep, int kp) {
        double[][] z2 = new double[z.length][];
        for (int i = 0; i < z.length; i++) z2[i] = z[i].clone();
        z2[t][e] += h;
        double[][] p = new double[z.length][];
        for (int i = 0; i < z.length; i++) p[i] = RoutingTwin.softmax(z2[i], dom[i]);
        if (scope == LbScope.GLOBAL) return RoutingTwin.loadBalance(p, picks, 0, c.T, ep, kp);
        double s = 0;
        for (int g = 0; g < c.sequences; g++) s += RoutingTwin.loadBalance(p, picks, c.seqStart[g], c.seqStart[g + 1], ep, kp);
        return s / c.sequences;
    }
}
