package org.moe4j.engine.config;

/**
 * EMO document pools. In training each (document, layer) draws a pool size uniformly from [poolMin, poolMax];
 * in evaluation the pool size is {@code evalPool} (0 = no pool). Sizes are clamped to the routed experts E'.
 */
public record PoolConfig(PoolMode mode, int poolMin, int poolMax, int evalPool) {
    public PoolConfig {
        if (mode == null) throw ConfigException.of("PoolConfig.mode", null, "must be NONE or EMO");
        if (poolMin < 1) throw ConfigException.of("PoolConfig.poolMin", poolMin, "must be >= 1");
        if (poolMax < poolMin)
            throw ConfigException.of("PoolConfig.poolMax", poolMax, "must be >= poolMin = " + poolMin);
        if (evalPool < 0) throw ConfigException.of("PoolConfig.evalPool", evalPool, "must be >= 0 (0 = no pool)");
    }

    public static PoolConfig none() {
        return new PoolConfig(PoolMode.NONE, 1, 1, 0);
    }

    /** EMO's training range 1/16 .. all of the routed experts, eval pool 1/4 of them. */
    public static PoolConfig emo(int routedExperts) {
        return new PoolConfig(PoolMode.EMO, Math.max(1, routedExperts / 16), routedExperts,
                Math.max(1, routedExperts / 4));
    }
}
