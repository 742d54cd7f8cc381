package org.moe4j.engine.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.engine.io.ModelCheckpoint;

/**
 * {@code train --precision}: bf16 trains (through whichever bf16 GEMM this machine has) to nearly the losses of fp32
 * from the same seed and writes a checkpoint of its float32 master weights; a value that is neither fp32 nor bf16 is refused naming the
 * option before anything runs.
 */
class PrecisionOptionTest {
    @Test
    void bf16TrainsLikeFp32AndSavesF32Weights(@TempDir Path dir) throws Exception {
        TrainCommand f32 = HostileOptionsTest.parse(new TrainCommand(),
                HostileOptionsTest.trainArgs(dir.resolve("f32"), "--precision", "fp32"));
        TrainCommand b16 = HostileOptionsTest.parse(new TrainCommand(),
                HostileOptionsTest.trainArgs(dir.resolve("bf16"), "--precision", "BF16"));
        assertEquals(0, f32.call());
        assertEquals(0, b16.call());
        double a = f32.summary.lastLoss(), b = b16.summary.lastLoss();
        assertTrue(Double.isFinite(b) && Math.abs(a - b) <= 2e-2 * Math.abs(a), "last losses: fp32 " + a + ", bf16 " + b);
        assertTrue(a != b, "bf16 gave fp32's loss bit for bit: the bf16 path was not taken");
        // the checkpoint holds the float32 master weights, loadable like any other
        try (var m = ModelCheckpoint.load(dir.resolve("bf16")); var r = ModelCheckpoint.load(dir.resolve("f32"))) {
            assertEquals(r.config(), m.config());
            assertEquals(r.layout().total(), m.layout().total());
        }
    }

    @Test
    void anotherPrecisionIsRefused(@TempDir Path dir) {
        HostileOptionsTest.refused(HostileOptionsTest.parse(new TrainCommand(),
                HostileOptionsTest.trainArgs(dir.resolve("x"), "--precision", "fp16")), "--precision", "fp16",
                "fp32 or bf16");
    }
}
