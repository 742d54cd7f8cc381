package org.moe4j.engine.config;

import static org.junit.jupiter.api.Assertions.assertEquals;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;

class ModelConfigProperties {

    @Property(tries = 200)
    void anyValidConfigRoundTripsThroughJson(@ForAll @IntRange(min = 1, max = 8) int headsLog, @ForAll @IntRange(min = 2, max = 64) int experts,
                                             @ForAll @IntRange(min = 0, max = 3) int shared, @ForAll @IntRange(min = 0, max = 63) int kSeed,
                                             @ForAll boolean normalize, @ForAll boolean overAll, @ForAll boolean emo,
                                             @ForAll MatryoshkaMode mode, @ForAll LbScope scope,
                                             @ForAll @DoubleRange(min = 0, max = 4) double cf,
                                             @ForAll @DoubleRange(min = 1, max = 1e6) double theta, @ForAll boolean qk) {
        int heads = 1 << (headsLog - 1);
        int s = Math.min(shared, experts - 1), routed = experts - s;
        int k = s + 1 + kSeed % routed;
        PoolConfig pool = emo ? new PoolConfig(PoolMode.EMO, 1 + kSeed % routed, routed, kSeed % (routed + 1)) : PoolConfig.none();
        MatryoshkaConfig m = new MatryoshkaConfig(mode, 1, 1 + kSeed % routed, 0.5 + kSeed);
        ModelConfig c = new ModelConfig(1000 + kSeed, heads * 8, 1 + kSeed % 5, heads, Math.max(1, heads / 2), experts, s, k,
                16 + kSeed, theta, qk, 1e-6, 64, kSeed, new RoutingConfig(normalize, overAll, pool, m, cf, 2 * cf, scope),
                new LossWeights(0.1, 0.001, 1.0, cf * 1e-5));
        assertEquals(c, ModelConfig.fromJson(c.toJson()));
    }
}
