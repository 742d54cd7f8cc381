package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LbScope;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.MatryoshkaMode;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.config.PoolMode;
import org.moe4j.engine.config.RoutingConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.io.TrainingState;
import org.moe4j.engine.model.MoeModel;
import picocli.CommandLine;

/** train's recipe options compose (pools + Matryoshka + ERC + capacity + shared), train, and resume exactly. */
class TrainRecipeTest {
    static ModelConfig recipe(String... args) {
        TrainRecipe r = new TrainRecipe();
        new CommandLine(r).parseArgs(args);
        return r.build();
    }

    @Test
    void everyMethodComposesWithEveryOther() {
        ModelConfig c = recipe("--config", "tiny", "--routing", "emo+matryoshka+capacity+shared", "--experts", "10",
                "--k", "3", "--erc", "0.5", "--erc-alpha", "0.8", "--lb-scope", "local", "--lb", "0.05", "--z", "0.002",
                "--d", "96", "--layers", "3", "--expert-hidden", "48", "--vocab", "300", "--out-z", "1e-5");
        assertEquals(96, c.d());
        assertEquals(3, c.layers());
        assertEquals(10, c.experts());
        assertEquals(1, c.sharedExperts());
        assertEquals(3, c.k());
        assertEquals(48, c.expertHidden());
        assertEquals(300, c.vocab());
        assertEquals(0, 96 % c.heads());
        RoutingConfig r = c.routing();
        assertEquals(PoolMode.EMO, r.pool().mode());
        assertEquals(1, r.pool().poolMin()); // max(1, 9/16)
        assertEquals(9, r.pool().poolMax()); // E' = 10 - 1
        assertEquals(2, r.pool().evalPool()); // 9/4
        assertEquals(MatryoshkaMode.UNIFORM, r.matryoshka().mode());
        assertEquals(1, r.matryoshka().kMin());
        assertEquals(4, r.matryoshka().kMax()); // min(E' = 9, 2 k' = 4)
        assertTrue(r.normalizeTopK(), "Matryoshka renormalises its gates");
        assertEquals(1.25, r.capacityFactor());
        assertEquals(2.0, r.evalCapacityFactor());
        assertEquals(LbScope.LOCAL, r.lbScope());
        assertEquals(new LossWeights(0.05, 0.002, 0.5, 1e-5, 0.8), c.loss());
    }

    @Test
    void explicitOptionsOverrideTheShorthands() {
        ModelConfig c = recipe("--config", "tiny", "--routing", "emo", "--experts", "16", "--pool-min", "2",
                "--pool-max", "8", "--eval-pool", "0", "--matryoshka", "2..3", "--matryoshka-dist", "power",
                "--normalize-topk", "false", "--capacity", "1.5");
        RoutingConfig r = c.routing();
        assertEquals(2, r.pool().poolMin());
        assertEquals(8, r.pool().poolMax());
        assertEquals(0, r.pool().evalPool());
        assertEquals(MatryoshkaMode.POWER, r.matryoshka().mode());
        assertEquals(2, r.matryoshka().kMin());
        assertEquals(3, r.matryoshka().kMax());
        assertFalse(r.normalizeTopK());
        assertEquals(1.5, r.capacityFactor());
        assertEquals(2.0, r.evalCapacityFactor(), "a capacity switched on by --capacity evaluates at 2.0");
        // pools on by a size option alone; ERC off by weight; the k of a shared expert counts it
        c = recipe("--config", "tiny", "--pool-max", "4", "--erc", "0", "--shared", "2");
        assertEquals(PoolMode.EMO, c.routing().pool().mode());
        assertEquals(4, c.routing().pool().poolMax());
        assertEquals(0.0, c.loss().erc());
        assertEquals(2, c.sharedExperts());
        assertEquals(4, c.k(), "routed k' 2 of the base kept, plus 2 shared");
    }

    @Test
    void theShorthandsGiveWhatTheSingleMethodCliGave() {
        ModelConfig base = TrainCommand.baseConfig("tiny");
        int routed = base.routedExperts(), kp = base.routedK();
        assertEquals(base.withRouting(RoutingConfig.standard()), TrainCommand.withRouting(base, "standard"));
        assertEquals(base.withRouting(RoutingConfig.emo(routed)), TrainCommand.withRouting(base, "emo"));
        assertEquals(base.withRouting(RoutingConfig.matryoshka(1, Math.min(routed, 2 * kp))),
                TrainCommand.withRouting(base, "matryoshka"));
        ModelConfig shared = TrainCommand.withRouting(base, "shared");
        assertEquals(1, shared.sharedExperts());
        assertEquals(base.k() + 1, shared.k());
        assertEquals(1.25, TrainCommand.withRouting(base, "capacity").routing().capacityFactor());
    }

    @Test
    void aConfigFileKeepsItsRoutingAndLossUnlessChanged(@TempDir Path dir) throws IOException {
        ModelConfig file = TrainCommand.withRouting(TrainCommand.baseConfig("tiny"), "emo+capacity")
                .withLoss(new LossWeights(0.2, 0.003, 0.0, 0.0, 0.0));
        Path p = dir.resolve("model.json");
        Files.writeString(p, file.toJson());
        assertEquals(file, recipe("--config", p.toString()));
        ModelConfig c = recipe("--config", p.toString(), "--lb", "0.3", "--eval-pool", "3");
        assertEquals(0.3, c.loss().lb());
        assertEquals(0.003, c.loss().routerZ());
        assertEquals(3, c.routing().pool().evalPool());
        assertEquals(file.routing().pool().poolMax(), c.routing().pool().poolMax());
        assertEquals(1.25, c.routing().capacityFactor());
        // a config JSON written before ERC's alpha was a setting reads as the paper's rule
        String old = file.toJson().replaceAll(",\\s*\"ercAlpha\"\\s*:\\s*0\\.0", "");
        assertFalse(old.contains("ercAlpha"), old);
        assertEquals(file, ModelConfig.fromJson(old));
    }

    @Test
    void aRecipeTheEngineCannotRunIsRefusedNamingTheOption() {
        assertRefused("--pool-max 20: must be in [1, 8]", "--config", "tiny", "--routing", "emo", "--pool-max", "20");
        assertRefused("--matryoshka (kMax) 9", "--config", "tiny", "--matryoshka", "1..9");
        assertRefused("--matryoshka 1..x: expected KMIN..KMAX", "--config", "tiny", "--matryoshka", "1..x");
        assertRefused("--no-pools with --pool-min", "--config", "tiny", "--no-pools", "--pool-min", "2");
        assertRefused("--k", "--config", "tiny", "--shared", "1", "--k", "1");
        assertRefused("--heads", "--config", "tiny", "--d", "64", "--heads", "3");
        assertRefused("--erc-alpha", "--config", "tiny", "--erc-alpha", "-1");
        assertRefused("'fast' is not one of", "--config", "tiny", "--routing", "emo+fast");
        assertRefused("--matryoshka-dist/--matryoshka-tau need Matryoshka on", "--config", "tiny", "--matryoshka-tau", "3");
    }

    private static void assertRefused(String expected, String... args) {
        Moe4jException e = assertThrows(Moe4jException.class, () -> recipe(args));
        assertTrue(e.getMessage().contains(expected), "expected '" + expected + "' in: " + e.getMessage());
    }

    @Test
    void helpDocumentsEveryOptionWithItsDefault() {
        StringWriter out = new StringWriter();
        CommandLine cl = new CommandLine(new TrainCommand());
        cl.setOut(new PrintWriter(out));
        cl.execute("--help");
        String help = out.toString();
        int options = 0;
        for (CommandLine.Model.OptionSpec o : cl.getCommandSpec().options()) {
            if (o.usageHelp() || o.versionHelp()) continue;
            String name = o.longestName();
            assertTrue(help.contains(name) || help.contains("--[no-]" + name.substring(2)), name + " is not in --help");
            String text = String.join(" ", o.description());
            assertTrue(text.contains("default"), name + " does not say its default: " + text);
            options++;
        }
        assertTrue(options >= 50, "train has " + options + " options");
        for (String recipeOption : new String[] {"--d", "--layers", "--experts", "--shared", "--k", "--expert-hidden",
                "--heads", "--kv-heads", "--vocab", "--lb", "--z", "--erc", "--erc-alpha", "--routing", "--config",
                "--pools", "--matryoshka", "--capacity", "--lb-scope"})
            assertTrue(cl.getCommandSpec().findOption(recipeOption) != null, recipeOption);
    }

    /** The composed recipe trains; a resume from its checkpoint repeats the uninterrupted run bit for bit. */
    @Test
    void aComposedRecipeTrainsAndResumesExactly(@TempDir Path dir) throws IOException {
        String[] recipe = {"--config", "tiny", "--routing", "emo+matryoshka+capacity+shared", "--experts", "10",
                "--k", "3", "--erc", "0.5", "--erc-alpha", "0.8", "--lb-scope", "local", "--gemm", "java",
                "--batch", "3", "--seq", "24", "--steps", "6", "--warmup", "2", "--seed", "7", "--log-every", "100"};
        Path whole = dir.resolve("whole"), cut = dir.resolve("cut");
        TrainCommandDataTest.train(concat(recipe, "--out", whole.toString()));
        // interrupted after its first step (the time limit stops the loop after the step that passes it)
        TrainCommandDataTest.train(concat(recipe, "--out", cut.toString(), "--time-limit", "1e-9"));
        assertEquals(1, TrainingState.readIfPresent(cut).step());
        // the same command again with --resume (its recipe options agree with the checkpoint), interrupted again
        TrainCommandDataTest.train(concat(recipe, "--out", cut.toString(), "--resume", cut.toString(), "--time-limit", "1e-9"));
        assertEquals(2, TrainingState.readIfPresent(cut).step());
        // then --resume alone: recipe, data order, schedule and seed all come from the checkpoint
        TrainCommandDataTest.train("--resume", cut.toString(), "--out", cut.toString(), "--gemm", "java", "--log-every", "100");
        try (MoeModel a = ModelCheckpoint.load(whole); MoeModel b = ModelCheckpoint.load(cut)) {
            assertEquals(a.config(), b.config());
            assertEquals(new LossWeights(0.1, 0.001, 0.5, 0.0, 0.8), b.config().loss());
            assertEquals(1, b.config().sharedExperts());
            assertArrayEquals(bytes(whole.resolve("model.safetensors")), bytes(cut.resolve("model.safetensors")),
                    "weights after 1 + 1 + 4 steps (resumed twice) equal those of 6 uninterrupted steps");
        }
        JsonNode st = new ObjectMapper().readTree(cut.resolve(ModelCheckpoint.STATE_JSON).toFile());
        assertEquals(6, st.get("step").asLong());
        assertEquals(7, st.path("extra").path("train").path("seed").asLong());
        assertEquals(6, st.path("extra").path("train").path("steps").asLong(), "the planned steps of the last session");

        // a resume with another recipe is refused, naming what differs
        Moe4jException e = assertThrows(Moe4jException.class, () -> TrainCommandDataTest.train("--resume",
                cut.toString(), "--steps", "8", "--lb", "0.2", "--routing", "emo"));
        assertTrue(e.getMessage().contains("loss.lb 0.1 in the checkpoint, 0.2 from the options"), e.getMessage());
        assertTrue(e.getMessage().contains("routing.matryoshka"), e.getMessage());
    }

    private static byte[] bytes(Path p) throws IOException {
        return Files.readAllBytes(p);
    }

    static String[] concat(String[] a, String... b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
