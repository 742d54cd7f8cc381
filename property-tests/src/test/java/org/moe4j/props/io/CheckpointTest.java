package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.Moe4jException;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.HfConfig;
import org.moe4j.io.safetensors.SafetensorsException;
import org.moe4j.simd.DType;
import org.moe4j.simd.Tensor;

/** Checkpoint folders: round trips (single file and sharded), atomic replacement, and the stdlib Python reader. */
class CheckpointTest {
    @TempDir
    Path tmp;

    static HfConfig config() {
        return new HfConfig("emo", 32, 8, 6, 2, 2, 1, 4, null, 2, 1, false, 10000.0, 1e-6, false, 64, 0, null);
    }

    /** Tensors with the documented HF names of a 2-layer, 4-expert model, filled with known values. */
    static Map<String, Tensor> tensors(Arena arena) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put("model.embed_tokens.weight", Tensor.allocate(arena, 32, 8));
        for (int l = 0; l < 2; l++) {
            String p = "model.layers." + l + ".";
            m.put(p + "self_attn.q_proj.weight", Tensor.allocate(arena, 8, 8));
            m.put(p + "mlp.gate.weight", Tensor.allocate(arena, DType.BF16, 4, 8));
            for (int j = 0; j < 4; j++) {
                m.put(p + "mlp.experts." + j + ".gate_proj.weight", Tensor.allocate(arena, DType.F16, 6, 8));
            }
        }
        m.put("lm_head.weight", Tensor.allocate(arena, 32, 8));
        int k = 0;
        for (Tensor t : m.values()) {
            for (long i = 0; i < t.numel(); i++) {
                t.set(i, ((k * 7 + i * 3) % 17 - 8) / 4f); // exact in bf16 and f16
            }
            k++;
        }
        return m;
    }

    @ParameterizedTest
    @ValueSource(longs = {1L << 30, 700})
    void roundTripSingleAndSharded(long maxShardBytes) {
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> m = tensors(arena);
            Path dir = tmp.resolve("ckpt");
            Checkpoint.write(dir, config(), m, maxShardBytes);
            assertEquals(maxShardBytes < 1000, Files.exists(dir.resolve(CheckpointDescriptor.INDEX)));
            try (Checkpoint c = Checkpoint.open(dir)) {
                assertEquals(config().hiddenSize(), c.config().hiddenSize());
                assertEquals(m.keySet().stream().sorted().toList(), c.names().stream().sorted().toList());
                for (var e : m.entrySet()) {
                    Tensor t = c.tensor(e.getKey());
                    assertEquals(e.getValue().dtype(), t.dtype());
                    assertArrayEquals(e.getValue().toFloatArray(), t.toFloatArray(), e.getKey());
                }
            }
        }
    }

    @Test
    void rewritingReplacesTheWholeFolderAndLeavesNoTemporaries() throws IOException {
        try (Arena arena = Arena.ofShared()) {
            Path dir = tmp.resolve("ckpt");
            Checkpoint.write(dir, config(), tensors(arena), 700); // sharded
            Checkpoint.write(dir, config(), tensors(arena), 1L << 30); // single: the old shards must be gone
            try (var s = Files.list(dir)) {
                assertEquals(2, s.count(), "config.json + model.safetensors");
            }
            try (var s = Files.list(tmp)) {
                assertEquals(1, s.count(), "no temporary or old folders beside the checkpoint");
            }
        }
    }

    @Test
    void badConfigIsNamed() throws IOException {
        Path dir = tmp.resolve("bad");
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("config.json"), "{\"model_type\":\"emo\",\"vocab_size\":10,\"hidden_size\":8,"
                + "\"intermediate_size\":4,\"num_hidden_layers\":1,\"num_attention_heads\":3,\"num_experts\":4,"
                + "\"num_experts_per_tok\":2}");
        Moe4jException e = assertThrows(Moe4jException.class, () -> Checkpoint.open(dir));
        assertTrue(e.getMessage().contains("'hidden_size' = 8 must be divisible by num_attention_heads = 3"), e.getMessage());
        Files.writeString(dir.resolve("config.json"), "{\"model_type\": ");
        e = assertThrows(SafetensorsException.class, () -> Checkpoint.open(dir));
        assertTrue(e.getMessage().contains("config.json: malformed JSON"), e.getMessage());
    }

    @Test
    void indexPointingOutsideTheFolderIsRejected() throws IOException {
        try (Arena arena = Arena.ofShared()) {
            Path dir = tmp.resolve("ckpt");
            Checkpoint.write(dir, config(), tensors(arena), 700);
            Path index = dir.resolve(CheckpointDescriptor.INDEX);
            Files.writeString(index, Files.readString(index).replace("model-00001", "../model-00001"));
            SafetensorsException e = assertThrows(SafetensorsException.class, () -> Checkpoint.open(dir));
            assertTrue(e.getMessage().contains("must name a shard file in the folder"), e.getMessage());
        }
    }

    @ParameterizedTest
    @ValueSource(longs = {1L << 30, 700})
    void theStandardLibraryPythonReaderFindsNamesShapesAndValues(long maxShardBytes) throws Exception {
        Path script = Path.of("..", "tools", "read_checkpoint.py").toAbsolutePath().normalize();
        assertTrue(Files.exists(script), script + " is part of the repository");
        assumeTrue(python() != null, "python3 is not installed: the stdlib reader cannot run here");
        try (Arena arena = Arena.ofShared()) {
            Map<String, Tensor> m = tensors(arena);
            Path dir = tmp.resolve("py");
            Checkpoint.write(dir, config(), m, maxShardBytes);
            Process p = new ProcessBuilder(python(), script.toString(), dir.toString()).redirectErrorStream(false).start();
            byte[] out = p.getInputStream().readAllBytes();
            String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(p.waitFor(60, TimeUnit.SECONDS));
            assertEquals(0, p.exitValue(), err);
            JsonNode root = new ObjectMapper().readTree(out);
            assertEquals("emo", root.get("config").get("model_type").asText());
            assertEquals(4, root.get("config").get("num_experts").asInt());
            JsonNode ts = root.get("tensors");
            assertEquals(m.size(), ts.size());
            for (var e : m.entrySet()) {
                JsonNode t = ts.get(e.getKey());
                assertFalse(t == null, "python reader misses " + e.getKey());
                int[] shape = e.getValue().shape();
                assertEquals(shape.length, t.get("shape").size());
                for (int i = 0; i < shape.length; i++) {
                    assertEquals(shape[i], t.get("shape").get(i).asInt());
                }
                float[] v = e.getValue().toFloatArray();
                double sum = 0;
                for (float x : v) {
                    sum += x;
                }
                for (int i = 0; i < Math.min(8, v.length); i++) {
                    assertEquals(v[i], t.get("first").get(i).asDouble(), 0.0, e.getKey() + "[" + i + "]");
                }
                assertEquals(sum, t.get("sum").asDouble(), 1e-9, e.getKey());
            }
        }
    }

    private static String python() {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator)) {
            Path p = Path.of(dir, "python3");
            if (Files.isExecutable(p)) {
                return p.toString();
            }
        }
        return null;
    }
}
