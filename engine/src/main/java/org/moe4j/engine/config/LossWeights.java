package org.moe4j.engine.config;

/**
 * Aux loss weights, as totals over the model: a layer's load balance weight is {@code lb / layers} and its router
 * z-loss weight {@code routerZ / layers} (EMO: 0.1 and 0.001); ERC is averaged over layers (weight 1.0); the output
 * z-loss 1e-5·logsumexp² is optional (0 = off).
 *
 * @param ercAlpha ERC's margin α (ALGORITHMS.md section 3); 0 = the paper's rule, 1 up to 64 routed experts and 0.5
 *                 above ({@link #ercAlpha(int)})
 */
public record LossWeights(double lb, double routerZ, double erc, double outputZ, double ercAlpha) {
    public LossWeights {
        check("LossWeights.lb", lb);
        check("LossWeights.routerZ", routerZ);
        check("LossWeights.erc", erc);
        check("LossWeights.outputZ", outputZ);
        check("LossWeights.ercAlpha", ercAlpha);
    }

    /** The weights with ERC's α by the paper's rule (0). */
    public LossWeights(double lb, double routerZ, double erc, double outputZ) {
        this(lb, routerZ, erc, outputZ, 0);
    }

    private static void check(String field, double w) {
        if (!(w >= 0) || Double.isInfinite(w)) throw ConfigException.of(field, w, "must be finite and >= 0");
    }

    /** ERC's α over {@code routed} kept routed experts: the set value, or 1 up to 64 experts and 0.5 above. */
    public double ercAlpha(int routed) {
        return ercAlpha > 0 ? ercAlpha : routed <= 64 ? 1.0 : 0.5;
    }

    public static LossWeights defaults() {
        return new LossWeights(0.1, 0.001, 1.0, 0.0, 0);
    }
}
