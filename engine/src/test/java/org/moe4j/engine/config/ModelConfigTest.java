package org.moe4j.engine.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;

class ModelConfigTest {

    static ModelConfig with(int heads, int kvHeads, int experts, int shared, int k) {
        return new ModelConfig(100, 64, 2, heads, kvHeads, experts, shared, k, 32, 10000, false, 1e-6, 32, 0,
                RoutingConfig.standard(), LossWeights.defaults());
    }

    @Test
    void presetsHaveTheStatedShapes() {
        ModelConfig s = ModelConfig.small();
        assertEquals(8192, s.vocab());
        assertEquals(256, s.d());
        assertEquals(4, s.layers());
        assertEquals(4, s.heads());
        assertEquals(16, s.experts());
        assertEquals(2, s.k());
        assertEquals(512, s.expertHidden());
        assertEquals(256, s.maxSeq());
        ModelConfig b = ModelConfig.bench();
        assertEquals(512, b.d());
        assertEquals(8, b.heads());
        assertEquals(32, b.experts());
        assertEquals(4, b.k());
        assertEquals(1e-6, b.normEps());
        ModelConfig t = ModelConfig.tiny();
        assertEquals(5, t.routedExperts());
        assertEquals(2, t.routedK());
    }

    @Test
    void presetsRoundTripThroughJson() {
        for (ModelConfig c : new ModelConfig[] {ModelConfig.small(), ModelConfig.bench(), ModelConfig.tiny()})
            assertEquals(c, ModelConfig.fromJson(c.toJson()));
        ModelConfig emo = ModelConfig.small().withRouting(new RoutingConfig(true, true, PoolConfig.emo(16),
                new MatryoshkaConfig(MatryoshkaMode.POWER, 1, 6, 2.0), 1.25, 2.0, LbScope.LOCAL));
        String json = emo.toJson();
        assertTrue(json.contains("\"lbScope\" : \"LOCAL\""), json);
        assertEquals(emo, ModelConfig.fromJson(json));
    }

    static void rejects(String expected, Runnable r) {
        ConfigException e = assertThrows(ConfigException.class, r::run);
        assertEquals(expected, e.getMessage());
        assertTrue(e instanceof Moe4jException);
    }

    @Test
    void badValuesNameTheFieldTheValueAndTheRule() {
        rejects("ModelConfig.kvHeads = 3: must divide heads = 8", () -> with(8, 3, 8, 0, 2));
        rejects("ModelConfig.d = 64: must be a multiple of heads = 3", () -> with(3, 1, 8, 0, 2));
        rejects("ModelConfig.sharedExperts = 8: must be in [0, experts - 1] = [0, 7] (at least one routed expert)",
                () -> with(8, 8, 8, 8, 2));
        rejects("ModelConfig.k = 1: must be in [sharedExperts + 1, experts] = [2, 8] (k counts the shared experts)",
                () -> with(8, 8, 8, 1, 1));
        rejects("ModelConfig.k = 9: must be in [sharedExperts + 1, experts] = [1, 8] (k counts the shared experts)",
                () -> with(8, 8, 8, 0, 9));
        rejects("ModelConfig.experts = 0: must be > 0", () -> with(8, 8, 0, 0, 1));
        rejects("PoolConfig.poolMax = 2: must be >= poolMin = 4", () -> new PoolConfig(PoolMode.EMO, 4, 2, 0));
        rejects("MatryoshkaConfig.kMin = 0: must be >= 1", () -> new MatryoshkaConfig(MatryoshkaMode.UNIFORM, 0, 3, 2));
        rejects("RoutingConfig.capacityFactor = -1.0: must be finite and >= 0 (0 = none)",
                () -> new RoutingConfig(false, false, PoolConfig.none(), MatryoshkaConfig.off(), -1, 0, LbScope.GLOBAL));
        rejects("LossWeights.lb = NaN: must be finite and >= 0", () -> new LossWeights(Double.NaN, 0, 0, 0));
        rejects("ModelConfig.routing.pool.poolMax = 17: must be <= routed experts E - s = 16",
                () -> ModelConfig.small().withRouting(new RoutingConfig(false, false,
                        new PoolConfig(PoolMode.EMO, 2, 17, 4), MatryoshkaConfig.off(), 0, 0, LbScope.GLOBAL)));
        rejects("ModelConfig.routing.matryoshka.kMax = 20: must be <= routed experts E - s = 16",
                () -> ModelConfig.small().withRouting(new RoutingConfig(true, false, PoolConfig.none(),
                        new MatryoshkaConfig(MatryoshkaMode.UNIFORM, 1, 20, 2), 0, 0, LbScope.GLOBAL)));
    }

    @Test
    void badJsonValuesSurfaceAsTheRuleTheyBreak() {
        String json = ModelConfig.bench().toJson().replace("\"kvHeads\" : 8", "\"kvHeads\" : 3");
        rejects("ModelConfig.kvHeads = 3: must divide heads = 8", () -> ModelConfig.fromJson(json));
        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.fromJson("{\"vocab\": 5}"));
        assertTrue(e.getMessage().startsWith("ModelConfig JSON: "), e.getMessage());
        ConfigException typo = assertThrows(ConfigException.class,
                () -> ModelConfig.fromJson(ModelConfig.tiny().toJson().replace("\"vocab\"", "\"vocabSize\"")));
        assertTrue(typo.getMessage().contains("'vocab'"), typo.getMessage());
    }

    /** Read from a file, a broken rule names the file and the JSON key as written, nested keys included. */
    @Test
    void fromAFileTheMessageNamesTheFileAndTheJsonKey() {
        String bench = ModelConfig.bench().toJson();
        rejects("cfg.json: kvHeads = 3: must divide heads = 8",
                () -> ModelConfig.fromJson(bench.replace("\"kvHeads\" : 8", "\"kvHeads\" : 3"), "cfg.json"));
        rejects("cfg.json: routing.capacityFactor = -2.0: must be finite and >= 0 (0 = none)",
                () -> ModelConfig.fromJson(bench.replace("\"capacityFactor\" : 0.0", "\"capacityFactor\" : -2.0"), "cfg.json"));
        rejects("cfg.json: loss.lb = -1.0: must be finite and >= 0",
                () -> ModelConfig.fromJson(bench.replace("\"lb\" : 0.1", "\"lb\" : -1.0"), "cfg.json"));
        ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.fromJson("{\"vocab\": 5}", "cfg.json"));
        assertTrue(e.getMessage().startsWith("cfg.json: ") && !e.getMessage().contains("ModelConfig JSON"), e.getMessage());
        assertEquals("routing.matryoshka.kMax", ModelConfig.jsonKey("MatryoshkaConfig.kMax"));
        assertEquals("routing.pool.poolMax", ModelConfig.jsonKey("ModelConfig.routing.pool.poolMax"));
    }

    /** Per-layer expert counts: accessors, JSON round trip, a uniform model's JSON without them, bad lists by name. */
    @Test
    void perLayerExpertCounts() {
        ModelConfig u = with(4, 4, 8, 1, 3);
        assertTrue(!u.toJson().contains("layerExperts") && !u.toJson().contains("layerK"), u.toJson());
        assertTrue(u.uniform());
        ModelConfig p = u.withLayers(java.util.List.of(3, 6), null);
        assertEquals(6, p.experts());
        assertEquals(3, p.experts(0));
        assertEquals(3, p.k(0));
        assertEquals(2, p.routedK(0));
        assertEquals(3, p.k(1));
        assertEquals(2, p.minRoutedExperts());
        assertTrue(!p.uniform());
        assertEquals(p, ModelConfig.fromJson(p.toJson()));
        ModelConfig q = u.withLayers(null, java.util.List.of(2, 3));
        assertEquals(1, q.routedK(0));
        assertEquals(q, ModelConfig.fromJson(q.toJson()));
        String[][] bad = {
                {"\"layerExperts\" : [ 3, 6, 6 ]", "layerExperts = [3, 6, 6]: must list one value per layer: 2 values, got 3"},
                {"\"layerExperts\" : [ 1, 6 ]", "layerExperts = [1, 6]: layer 0 has 1 experts, must be in [sharedExperts + 1, experts] = [2, 6]"},
                {"\"layerExperts\" : [ 3, 5 ]", "experts = 6: must be the largest of layerExperts [3, 5] = 5"},
                {"\"layerK\" : null", "layerK = [4, 3]: layer 0 routes 4 experts per token"},
        };
        for (String[] b : bad) {
            String json = p.toJson().replace("\"layerExperts\" : [ 3, 6 ]", b[0]);
            if (b[0].startsWith("\"layerK")) json = p.toJson().replace("\"layerExperts\" : [ 3, 6 ]",
                    "\"layerExperts\" : [ 3, 6 ], \"layerK\" : [ 4, 3 ]");
            String j = json;
            ConfigException e = assertThrows(ConfigException.class, () -> ModelConfig.fromJson(j, "config.json"));
            assertTrue(e.getMessage().startsWith("config.json: ") && e.getMessage().contains(b[1]), e.getMessage());
        }
    }
}
