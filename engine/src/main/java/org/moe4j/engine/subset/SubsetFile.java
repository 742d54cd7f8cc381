package org.moe4j.engine.subset;

import org.moe4j.Moe4jException;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.Set;

/**
 * subset.json: numerics' subset format ({@code "layers": [[ids] per layer]}, what {@code generate --subset} and
 * {@code prune --subset} read) plus how it was chosen: method, K, calibration, the scores of the routed experts
 * (null for one that was not a candidate) and the source checkpoint's hash.
 */
public final class SubsetFile {
    /** The fields besides "layers"/"experts" that readers accept and ignore. */
    public static final Set<String> DESCRIPTIVE_FIELDS = Set.of("method", "keep", "calibration", "calibration_tokens",
            "scores", "source_checkpoint", "source_sha256", "seed", "k_per_layer", "budget_bytes");
    private static final ObjectMapper JSON = new ObjectMapper();

    private SubsetFile() {
    }

    public static ObjectNode toJson(SubsetSelector.Selection sel, Calibration calib, Path source, String sourceHash, long seed) {
        ObjectNode o = JSON.createObjectNode();
        ArrayNode layers = o.putArray("layers");
        for (int[] k : sel.kept()) {
            ArrayNode a = layers.addArray();
            for (int e : k) a.add(e);
        }
        o.put("method", sel.method().cliName());
        o.put("keep", sel.keep());
        if (sel.method() == SubsetMethod.RANDOM) o.put("seed", seed);
        if (calib != null) {
            o.put("calibration", calib.description());
            o.put("calibration_tokens", calib.tokens());
        }
        if (sel.method() != SubsetMethod.RANDOM) {
            ArrayNode sc = o.putArray("scores");
            for (double[] s : sel.scores()) {
                ArrayNode a = sc.addArray();
                for (double v : s) {
                    if (Double.isNaN(v)) a.addNull();
                    else a.add(v);
                }
            }
        }
        if (source != null) o.put("source_checkpoint", source.toAbsolutePath().normalize().toString());
        if (sourceHash != null) o.put("source_sha256", sourceHash);
        return o;
    }

    public static void write(Path file, ObjectNode json, String option) {
        try {
            OutputFolders.writeAtomically(file, JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(json), option);
        } catch (JsonProcessingException e) {
            throw new Moe4jException(option + " " + file + ": cannot serialise the subset JSON: " + e.getMessage(), e);
        }
    }
}
