package org.moe4j.engine.routing;

import org.moe4j.Moe4jException;
import org.moe4j.engine.config.MatryoshkaMode;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.config.RoutingConfig;

/**
 * What one routing call does beyond the config: the allowed experts (subset, pool sizes), k' and the capacity
 * factor, and the random stream to draw from. Mutable and reused; set it once per layer call, no allocation.
 */
public final class RoutingControl {
    /** Where each document's pool size comes from. */
    public enum PoolSizes {
        /** No document pool: a token may use every kept routed expert. */
        NONE,
        /** Uniform in [poolMin, poolMax] per (document, layer), from the rng (EMO training). */
        SAMPLED,
        /** The same size P for every document (EMO evaluation pool). */
        FIXED,
        /** Pinned per document, in document order (sequence by sequence, position order). */
        GIVEN,
        /** A given pool (an expert set) per document, or null for every kept expert: generation's frozen pools. */
        SETS
    }

    /** Where k' comes from. */
    public enum KSource { FIXED, UNIFORM, POWER }

    ExpertSet subset;
    PoolSizes poolSizes = PoolSizes.NONE;
    int poolMin = 1, poolMax = 1, fixedPool;
    int[] givenPools;
    ExpertSet[] givenSets;
    KSource kSource = KSource.FIXED;
    int kRouted = 1, kMin = 1, kMax = 1;
    double tau = 2.0;
    private double[] powWeights;
    private double powTotal;
    double capacityFactor;
    RoutingRng rng;
    Replicas replicas;
    Routing replay;

    /**
     * The other ranks of a data-parallel run, as the router needs them so that routing over this rank's share of a
     * global micro-batch equals routing over the whole of it (ALGORITHMS.md section 3, "c summed over all ranks").
     * Both methods are collective: every rank calls them in the same order, once per routing call that needs them.
     */
    public interface Replicas {
        /**
         * Given this rank's document count, writes the documents of the ranks before this one to {@code out[0]} and
         * of the ranks after it to {@code out[1]} (so sampled pool sizes are drawn in the global document order).
         */
        void documents(int mine, int[] out);

        /** Sums {@code counts[0 .. n)} over the ranks, in place. */
        void sum(double[] counts, int n);
    }

    /** Training defaults of a model: its pool range, its Matryoshka k, its training capacity factor. */
    public static RoutingControl training(ModelConfig c, RoutingRng rng) {
        return training(c, -1, rng);
    }

    /** As {@link #training(ModelConfig, RoutingRng)} for layer l: its own k' (a pruned layer may route fewer); -1 = the model's. */
    public static RoutingControl training(ModelConfig c, int l, RoutingRng rng) {
        RoutingControl ctl = new RoutingControl().fixedK(l < 0 ? c.routedK() : c.routedK(l)).rng(rng);
        RoutingConfig r = c.routing();
        if (r.pool().mode() == PoolMode.EMO) ctl.sampledPools(r.pool().poolMin(), r.pool().poolMax());
        var m = r.matryoshka();
        if (m.mode() == MatryoshkaMode.UNIFORM) ctl.uniformK(m.kMin(), m.kMax());
        else if (m.mode() == MatryoshkaMode.POWER) ctl.powerK(m.kMin(), m.kMax(), m.tau());
        return ctl.capacityFactor(r.capacityFactor());
    }

    /** Evaluation defaults: fixed k' = k - s, the eval pool (if EMO and evalPool > 0), the eval capacity factor. */
    public static RoutingControl eval(ModelConfig c) {
        return eval(c, -1);
    }

    /** As {@link #eval(ModelConfig)} for layer l (its own k'); -1 = the model's. */
    public static RoutingControl eval(ModelConfig c, int l) {
        RoutingControl ctl = new RoutingControl().fixedK(l < 0 ? c.routedK() : c.routedK(l));
        RoutingConfig r = c.routing();
        if (r.pool().mode() == PoolMode.EMO && r.pool().evalPool() > 0) ctl.fixedPools(r.pool().evalPool());
        return ctl.capacityFactor(r.evalCapacityFactor());
    }

    /** A fixed subset of experts (deployment); null = every expert. Shared experts in it are ignored. */
    public RoutingControl subset(ExpertSet s) {
        subset = s;
        return this;
    }

    public RoutingControl noPools() {
        poolSizes = PoolSizes.NONE;
        return this;
    }

    public RoutingControl sampledPools(int min, int max) {
        if (min < 1 || max < min)
            throw new Moe4jException("RoutingControl: pool range [" + min + ", " + max + "] must satisfy 1 <= min <= max");
        poolSizes = PoolSizes.SAMPLED;
        poolMin = min;
        poolMax = max;
        return this;
    }

    public RoutingControl fixedPools(int p) {
        if (p < 1) throw new Moe4jException("RoutingControl: fixed pool size " + p + " must be >= 1");
        poolSizes = PoolSizes.FIXED;
        fixedPool = p;
        return this;
    }

    /** sizes[doc] per document in document order; the array is read, not copied. */
    public RoutingControl givenPools(int[] sizes) {
        if (sizes == null) throw new Moe4jException("RoutingControl: given pool sizes must not be null");
        poolSizes = PoolSizes.GIVEN;
        givenPools = sizes;
        return this;
    }

    /**
     * pools[doc] per document in document order: the routed experts it may use (intersected with the subset), or
     * null for every kept expert. The array is read, not copied; its entries may change between calls.
     */
    public RoutingControl givenPoolSets(ExpertSet[] pools) {
        if (pools == null) throw new Moe4jException("RoutingControl: given pool sets must not be null");
        poolSizes = PoolSizes.SETS;
        givenSets = pools;
        return this;
    }

    /**
     * Replays a recorded routing of the same tokens: k', each document's pool and every token's picks are taken from
     * {@code recorded} (nothing is drawn from the rng); the probabilities, gates, z-loss, load balance and capacity
     * drops are computed from this call's logits as usual. Compares two numerics of one model (BF16 and FP32 steps)
     * on one routing, where a near-tie would otherwise go the other way. The recorded routing must come from a router
     * of the same layer shape over the same tokens and kept experts (checked); null switches replay off.
     */
    public RoutingControl replay(Routing recorded) {
        replay = recorded;
        return this;
    }

    /** k' routed picks per token (a layer budget); clamped to the kept routed experts. */
    public RoutingControl fixedK(int k) {
        if (k < 1) throw new Moe4jException("RoutingControl: k' = " + k + " must be >= 1");
        kSource = KSource.FIXED;
        kRouted = k;
        return this;
    }

    public RoutingControl uniformK(int min, int max) {
        checkRange(min, max);
        kSource = KSource.UNIFORM;
        kMin = min;
        kMax = max;
        return this;
    }

    /** P(k') ∝ k'^(1/tau) on [min, max]. */
    public RoutingControl powerK(int min, int max, double tau) {
        checkRange(min, max);
        if (!(tau > 0) || Double.isInfinite(tau)) throw new Moe4jException("RoutingControl: tau = " + tau + " must be finite and > 0");
        kSource = KSource.POWER;
        kMin = min;
        kMax = max;
        this.tau = tau;
        // the weights k^(1/tau), once here: StrictMath.pow allocates scratch arrays until C2 compiles it, and a draw
        // per layer per step would take thousands of steps to get there
        powWeights = new double[max - min + 1];
        double inv = 1.0 / tau;
        powTotal = 0;
        for (int k = min; k <= max; k++) powTotal += (powWeights[k - min] = StrictMath.pow(k, inv));
        return this;
    }

    private static void checkRange(int min, int max) {
        if (min < 1 || max < min)
            throw new Moe4jException("RoutingControl: k' range [" + min + ", " + max + "] must satisfy 1 <= min <= max");
    }

    /** 0 = no capacity. */
    public RoutingControl capacityFactor(double cf) {
        if (!(cf >= 0) || Double.isInfinite(cf)) throw new Moe4jException("RoutingControl: capacity factor " + cf + " must be finite and >= 0");
        capacityFactor = cf;
        return this;
    }

    public RoutingControl rng(RoutingRng r) {
        rng = r;
        return this;
    }

    /** The other ranks of a data-parallel run (null: this process alone, the default). */
    public RoutingControl replicas(Replicas r) {
        replicas = r;
        return this;
    }

    public ExpertSet subset() {
        return subset;
    }

    public PoolSizes poolSizes() {
        return poolSizes;
    }

    public KSource kSource() {
        return kSource;
    }

    public double capacityFactor() {
        return capacityFactor;
    }

    RoutingRng requireRng(String why) {
        if (rng == null) throw new Moe4jException("RoutingControl: " + why + " needs a RoutingRng (call rng(...))");
        return rng;
    }

    /** Draws (or returns) this call's k', before clamping to the kept experts. */
    int drawK() {
        switch (kSource) {
            case FIXED:
                return kRouted;
            case UNIFORM:
                return requireRng("uniform Matryoshka k").nextInt(kMin, kMax);
            default: {
                // P(k) ∝ k^(1/tau): inverse CDF by a walk over [kMin, kMax] (same sums and order as before)
                double u = requireRng("power Matryoshka k").nextDouble() * powTotal;
                for (int k = kMin; k < kMax; k++) {
                    u -= powWeights[k - kMin];
                    if (u < 0) return k;
                }
                return kMax;
            }
        }
    }
}
