package org.moe4j.engine.config;

/**
 * Routing settings (ALGORITHMS.md section 2).
 *
 * @param normalizeTopK      divide the picked gates by their sum (off for EMO/OLMoE, on for Mixtral, Matryoshka)
 * @param softmaxOverAll     gate probabilities from the softmax over every routed expert the subset keeps, ignoring
 *                           the document pool; false (default) = over the allowed experts (EMO's masked softmax)
 * @param capacityFactor     training capacity factor, 0 = no capacity (OpenMoE: 1.25)
 * @param evalCapacityFactor evaluation capacity factor, 0 = none (OpenMoE: 2.0)
 */
public record RoutingConfig(boolean normalizeTopK, boolean softmaxOverAll, PoolConfig pool,
                            MatryoshkaConfig matryoshka, double capacityFactor, double evalCapacityFactor,
                            LbScope lbScope) {
    public RoutingConfig {
        if (pool == null) throw ConfigException.of("RoutingConfig.pool", null, "must be given (PoolConfig.none())");
        if (matryoshka == null)
            throw ConfigException.of("RoutingConfig.matryoshka", null, "must be given (MatryoshkaConfig.off())");
        checkCf("RoutingConfig.capacityFactor", capacityFactor);
        checkCf("RoutingConfig.evalCapacityFactor", evalCapacityFactor);
        if (lbScope == null) throw ConfigException.of("RoutingConfig.lbScope", null, "must be GLOBAL or LOCAL");
    }

    private static void checkCf(String field, double cf) {
        if (!(cf >= 0) || Double.isInfinite(cf)) throw ConfigException.of(field, cf, "must be finite and >= 0 (0 = none)");
    }

    /** Standard top-k: no pool, fixed k, no capacity, global load balance, no renormalisation. */
    public static RoutingConfig standard() {
        return new RoutingConfig(false, false, PoolConfig.none(), MatryoshkaConfig.off(), 0, 0, LbScope.GLOBAL);
    }

    /** EMO training: document pools 1/16 .. all of the routed experts (eval pool 1/4), no renormalisation, global LB. */
    public static RoutingConfig emo(int routedExperts) {
        return new RoutingConfig(false, false, PoolConfig.emo(routedExperts), MatryoshkaConfig.off(), 0, 0, LbScope.GLOBAL);
    }

    /** Matryoshka k' uniform on [kMin, kMax] with renormalised gates. */
    public static RoutingConfig matryoshka(int kMin, int kMax) {
        return new RoutingConfig(true, false, PoolConfig.none(), new MatryoshkaConfig(MatryoshkaMode.UNIFORM, kMin, kMax, 2.0),
                0, 0, LbScope.GLOBAL);
    }
}
