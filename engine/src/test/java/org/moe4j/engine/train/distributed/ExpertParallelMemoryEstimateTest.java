package org.moe4j.engine.train.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.MemoryEstimate;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;

/**
 * The memory check before allocation counts what an expert-parallel rank holds (the dense tensors and its own
 * experts), not the whole model: a limit between the two lets the rank's model be built and refuses the whole one.
 */
class ExpertParallelMemoryEstimateTest {
    /** Loading a checkpoint into a rank's layout (resume, --init) is checked for the share too. */
    @Test
    void aRankLoadsItsShareOfACheckpointThatWouldNotFitWhole(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) {
        ModelConfig c = ModelConfig.bench();
        java.nio.file.Path ck = dir.resolve("ck");
        try (MoeModel m = new MoeModel(c).initRandom(3)) {
            org.moe4j.engine.io.ModelCheckpoint.save(ck, m, null, null);
        }
        ParamLayout rank = ExpertParallel.rankLayout(c, 0, 4, 4);
        double whole = MemoryEstimate.parameters(c), held = rank.total();
        String old = System.getProperty("moe4j.memoryLimit");
        System.setProperty("moe4j.memoryLimit", String.valueOf((long) ((held + whole) / 2 * 8)));
        try {
            try (MoeModel m = org.moe4j.engine.io.ModelCheckpoint.load(ck, null, cfg -> ExpertParallel.rankLayout(cfg, 0, 4, 4))) {
                assertEquals(held, m.layout().total(), 0.0);
            }
            Moe4jException e = assertThrows(Moe4jException.class, () -> {
                try (MoeModel m = org.moe4j.engine.io.ModelCheckpoint.load(ck, null, null)) {
                    m.layout();
                }
            });
            assertTrue(e.getMessage().contains("more than the"), e.getMessage());
        } finally {
            if (old == null) System.clearProperty("moe4j.memoryLimit");
            else System.setProperty("moe4j.memoryLimit", old);
        }
    }

    @Test
    void aRankIsCheckedForItsShareOfTheModel() {
        ModelConfig c = ModelConfig.bench();
        ParamLayout rank = ExpertParallel.rankLayout(c, 1, 4, 4);
        double whole = MemoryEstimate.parameters(c), held = rank.total();
        assertEquals(new ParamLayout(c).total(), whole, 0.0);
        assertTrue(held < whole / 2, "a quarter of the experts plus the dense tensors: " + held + " of " + whole);
        double tokens = 2048;
        assertEquals(MemoryEstimate.trainingBytes(c, tokens), MemoryEstimate.trainingBytes(c, tokens, whole), 0.0);
        assertEquals(16 * (whole - held), MemoryEstimate.trainingBytes(c, tokens) - MemoryEstimate.trainingBytes(c, tokens, held),
                1e-6 * whole);
        String old = System.getProperty("moe4j.memoryLimit");
        // room for the rank's parameters and gradients, not for the whole model's
        System.setProperty("moe4j.memoryLimit", String.valueOf((long) ((held + whole) / 2 * 8)));
        try {
            try (MoeModel m = new MoeModel(rank, true)) {
                assertEquals(held, m.layout().total(), 0.0);
            }
            Moe4jException e = assertThrows(Moe4jException.class, () -> new MoeModel(c).close());
            assertTrue(e.getMessage().contains("more than the"), e.getMessage());
        } finally {
            if (old == null) System.clearProperty("moe4j.memoryLimit");
            else System.setProperty("moe4j.memoryLimit", old);
        }
    }
}
