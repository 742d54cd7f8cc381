package org.moe4j.props.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.engine.cli.NumericsCommand;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.safetensors.SafetensorsWriter;
import org.moe4j.simd.Tensor;
import picocli.CommandLine;

/**
 * Bad input to {@code ./moe4j numerics} fails before any output is written, with a message that names the file,
 * field or token: unknown or misshapen tensors, token ids outside the vocabulary, pool sizes out of range or of the
 * wrong count, subsets that drop a shared expert, malformed JSON, bad ERC noise, bad options.
 * The model: {@link ModelConfig#tiny()} (V 64, d 16, 2 layers, E 6 with 1 shared, k 3, EOS 1).
 */
class NumericsBadInputTest {
    @TempDir
    Path tmp;
    Path ckpt, tokens, out;

    @BeforeEach
    void checkpoint() throws IOException {
        ckpt = tmp.resolve("ckpt");
        try (MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(7)) {
            ModelCheckpoint.save(ckpt, m, null, null);
        }
        tokens = json("tokens.json", "{\"tokens\": [[5, 6, 1, 7], [8, 9]], \"eos_id\": 1}");
        out = tmp.resolve("RESULT.json");
    }

    Path json(String name, String text) throws IOException {
        return Files.writeString(tmp.resolve(name), text);
    }

    List<String> base() {
        return new ArrayList<>(List.of("--ckpt", ckpt.toString(), "--tokens", tokens.toString(), "--out", out.toString()));
    }

    /** Runs the main with base() + extra and returns the message of the error it must raise. */
    String fails(List<String> args) {
        NumericsCommand cmd = CommandLine.populateCommand(new NumericsCommand(), args.toArray(String[]::new));
        Moe4jException e = assertThrows(Moe4jException.class, cmd::call);
        assertFalse(Files.exists(out), "no result is written on bad input");
        return e.getMessage();
    }

    String fails(String... extra) {
        List<String> a = base();
        a.addAll(List.of(extra));
        return fails(a);
    }

    static void has(String message, String... parts) {
        for (String p : parts) assertTrue(message.contains(p), "message '" + message + "' should name '" + p + "'");
    }

    @Test
    void theGoodInputRuns() throws Exception {
        List<String> a = base();
        a.addAll(List.of("--grads", tmp.resolve("g.safetensors").toString()));
        int code = CommandLine.populateCommand(new NumericsCommand(), a.toArray(String[]::new)).call();
        assertEquals(0, code);
        assertTrue(Files.exists(out) && Files.exists(tmp.resolve("g.safetensors")));
    }

    // ------------------------------------------------------------------------------------------- the checkpoint

    /** Writes the tiny model's tensors with one changed: renamed (unknown), reshaped, or an extra one. */
    Path brokenCheckpoint(String extraName, String reshape) {
        Path dir = tmp.resolve("broken");
        try (MoeModel m = new MoeModel(ModelConfig.tiny()).initRandom(7); Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> t = new LinkedHashMap<>();
            for (ParamLayout.Entry e : m.layout().entries()) {
                Tensor p = m.param(e.name());
                if (e.name().equals(reshape)) p = Tensor.allocate(arena, e.shape()[0] + 1, e.shape()[1]);
                t.put(e.name(), p);
            }
            if (extraName != null) t.put(extraName, Tensor.allocate(arena, 2, 2));
            Checkpoint.write(dir, ModelCheckpoint.hfConfig(m.config()), t, 1L << 30);
        }
        return dir;
    }

    @Test
    void anUnknownTensorIsNamed() {
        ckpt = brokenCheckpoint("model.layers.0.mlp.experts.9.gate_proj.weight", null);
        has(fails(), "broken", "model.layers.0.mlp.experts.9.gate_proj.weight", "not a parameter");
    }

    @Test
    void aWrongShapeIsNamed() {
        ckpt = brokenCheckpoint(null, "model.layers.1.mlp.gate.weight");
        has(fails(), "broken", "model.layers.1.mlp.gate.weight", "[7, 16]", "[6, 16]");
    }

    @Test
    void aMissingCheckpointIsNamed() {
        ckpt = tmp.resolve("nowhere");
        has(fails(), "nowhere", "config.json");
    }

    // ------------------------------------------------------------------------------------------- tokens

    @Test
    void aTokenOutsideTheVocabularyIsNamed() throws IOException {
        tokens = json("tokens.json", "{\"tokens\": [[5, 6], [8, 64, 9]]}");
        has(fails(), "tokens.json", "token 64", "tokens[1][1]", "[0, 64)");
        tokens = json("tokens.json", "{\"tokens\": [[-3]]}");
        has(fails(), "tokens.json", "token -3", "tokens[0][0]");
        tokens = json("tokens.json", "{\"tokens\": [[5, \"x\"]]}");
        has(fails(), "tokens.json", "tokens[0][1]", "integer");
    }

    @Test
    void malformedOrIncompleteTokenFilesAreNamed() throws IOException {
        tokens = json("tokens.json", "{\"tokens\": [[5, 6], [8, 9]");
        has(fails(), "tokens.json", "malformed JSON");
        tokens = json("tokens.json", "{\"tokens\": [[5, 6]]} trailing");
        has(fails(), "tokens.json", "malformed JSON");
        tokens = json("tokens.json", "{\"tokenz\": [[5, 6]]}");
        has(fails(), "tokens.json", "unknown field 'tokenz'");
        tokens = json("tokens.json", "{\"eos_id\": 1}");
        has(fails(), "tokens.json", "'tokens' is missing");
        tokens = json("tokens.json", "{\"tokens\": [[5], []]}");
        has(fails(), "tokens.json", "tokens[1]", "empty");
        tokens = json("tokens.json", "{\"tokens\": [[5]], \"eos_id\": 70}");
        has(fails(), "tokens.json", "eos_id", "70");
        tokens = json("tokens.json", "{\"tokens\": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]]}");
        has(fails(), "tokens.json", "tokens[0] has 17 tokens", "16");
    }

    // ------------------------------------------------------------------------------------------- pools

    @Test
    void poolSizesOutOfRangeAreNamed() throws IOException {
        // 5 routed experts; sequence 0 has 2 documents (the EOS at position 2 opens one), sequence 1 has 1
        has(fails("--mode", "emo", "--pools", json("pools.json", "{\"pool_sizes\": 6}").toString()),
                "pools.json", "pool_sizes = 6", "[1, 5]");
        has(fails("--mode", "emo", "--pools", json("pools.json", "{\"pool_sizes\": [3, 0]}").toString()),
                "pools.json", "pool_sizes[1] = 0", "[1, 5]");
        has(fails("--mode", "emo", "--pools", json("pools.json",
                        "{\"pool_sizes\": [[[1, 2], [3]], [[4, 5], [9]]]}").toString()),
                "pools.json", "pool_sizes[1][1][0] = 9");
    }

    @Test
    void poolSizesOfTheWrongCountAreNamed() throws IOException {
        has(fails("--mode", "emo", "--pools", json("pools.json", "{\"pool_sizes\": [3, 3, 3]}").toString()),
                "pools.json", "pool_sizes has 3 entries, expected 2");
        has(fails("--mode", "emo", "--pools", json("pools.json",
                        "{\"pool_sizes\": [[[1], [3]], [[4, 5], [2]]]}").toString()),
                "pools.json", "pool_sizes[0][0]", "has 1 entries, expected 2");
        has(fails("--mode", "emo", "--pools", json("pools.json", "{\"pool_sizes\": [3, 3").toString()),
                "pools.json", "malformed JSON");
        has(fails("--mode", "emo", "--pools", json("pools.json", "{\"sizes\": 3}").toString()),
                "pools.json", "unknown field 'sizes'");
        has(fails("--mode", "emo"), "--mode emo needs --pools");
        has(fails("--pools", json("pools.json", "{\"pool_sizes\": 2}").toString()), "--pools", "--mode emo");
    }

    // ------------------------------------------------------------------------------------------- subsets

    @Test
    void aSubsetThatDropsASharedExpertIsNamed() throws IOException {
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"experts\": [0, 2, 3]}").toString()),
                "subset.json", "experts", "drops shared expert 5");
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"layers\": [[0, 5], [1, 2]]}").toString()),
                "subset.json", "layers[1]", "drops shared expert 5");
    }

    @Test
    void otherBadSubsetsAreNamed() throws IOException {
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"experts\": [5]}").toString()),
                "subset.json", "keeps no routed expert");
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"experts\": [0, 0, 5]}").toString()),
                "subset.json", "expert 0 twice");
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"experts\": [0, 6, 5]}").toString()),
                "subset.json", "experts[1] = 6", "[0, 6)");
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"layers\": [[0, 5]]}").toString()),
                "subset.json", "layers has 1 entries, expected 2");
        has(fails("--mode", "subset", "--subset", json("subset.json", "{\"experts\": [0, 5],}").toString()),
                "subset.json", "malformed JSON");
        has(fails("--mode", "subset", "--subset", json("subset.json", "[0, 5]").toString()),
                "subset.json", "top level must be a JSON object");
    }

    // ------------------------------------------------------------------------------------------- ERC noise

    Path noise(Map<String, int[]> shapes, float value) {
        Path p = tmp.resolve("noise.safetensors");
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> t = new LinkedHashMap<>();
            shapes.forEach((n, s) -> t.put(n, Tensor.allocate(arena, s).fill(value)));
            SafetensorsWriter.write(p, t, Map.of());
        }
        return p;
    }

    @Test
    void badErcNoiseIsNamed() {
        Map<String, int[]> good = new LinkedHashMap<>();
        good.put("model.layers.0.erc_noise", new int[] {5, 16});
        good.put("model.layers.1.erc_noise", new int[] {5, 16});
        Map<String, int[]> extra = new LinkedHashMap<>(good);
        extra.put("model.layers.2.erc_noise", new int[] {5, 16});
        has(fails("--erc-noise", noise(extra, 0.5f).toString()), "noise.safetensors", "unknown tensor 'model.layers.2.erc_noise'");
        Map<String, int[]> shape = new LinkedHashMap<>(good);
        shape.put("model.layers.1.erc_noise", new int[] {6, 16});
        has(fails("--erc-noise", noise(shape, 0.5f).toString()), "noise.safetensors", "model.layers.1.erc_noise", "[6, 16]", "[5, 16]");
        Map<String, int[]> missing = new LinkedHashMap<>(good);
        missing.remove("model.layers.0.erc_noise");
        has(fails("--erc-noise", noise(missing, 0.5f).toString()), "noise.safetensors", "model.layers.0.erc_noise", "missing");
        has(fails("--erc-noise", noise(good, 1.5f).toString()), "noise.safetensors", "model.layers.0.erc_noise", "[-1, 1]");
    }

    // ------------------------------------------------------------------------------------------- options

    @Test
    void badOptionsAreNamed() {
        has(fails("--k-per-layer", "2,2,1"), "--k-per-layer", "3 values", "2 layers");
        has(fails("--k-per-layer", "2,0"), "--k-per-layer", "entry 1 = 0", "[1, 5]");
        has(fails("--k-per-layer", "2,x"), "--k-per-layer", "'x'");
        has(fails("--weights", "lb=0.1,aux=2"), "--weights", "unknown key 'aux'");
        has(fails("--weights", "lb=-1"), "--weights", "lb");
        has(fails("--mode", "pools"), "--mode pools");
        has(fails("--norm-topk-prob", "yes"), "--norm-topk-prob yes");
        has(fails("--lb-scope", "batch"), "--lb-scope batch");
        has(fails("--capacity-factor", "-1"), "--capacity-factor");
    }
}
