package org.moe4j.engine.config;

/**
 * Aux loss weights, as totals over the model: a layer's load balance weight is {@code lb / layers} and its router
 * z-loss weight {@code routerZ / layers} (EMO: 0.1 and 0.001); ERC is averaged over layers (weight 1.0); the output
 * z-loss 1e-5·logsumexp² is optional (0 = off).
 */
public record LossWeights(double lb, double routerZ, double erc, double outputZ) {
    public LossWeights {
        check("LossWeights.lb", lb);
        check("LossWeights.routerZ", routerZ);
        check("LossWeights.erc", erc);
        check("LossWeights.outputZ", outputZ);
    }

    private static void check(String field, double w) {
        if (!(w >= 0) || Double.isInfinite(w)) throw ConfigException.of(field, w, "must be finite and >= 0");
    }

    public static LossWeights defaults() {
        return new LossWeights(0.1, 0.001, 1.0, 0.0);
    }
}
