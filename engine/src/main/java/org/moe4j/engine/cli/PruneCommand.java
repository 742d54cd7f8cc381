package org.moe4j.engine.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.numerics.NumericsInputs;
import org.moe4j.engine.subset.OutputFolders;
import org.moe4j.engine.subset.Pruner;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j prune}: a self-contained checkpoint with only a subset's experts. */
@Command(name = "prune", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Writes a checkpoint that keeps only the experts of a subset (and their router rows), renumbered in "
                + "ascending old id (shared experts stay last): num_experts = K, num_experts_per_tok = s + min(k - s, K - s). "
                + "Every layer must keep the same K."})
public final class PruneCommand implements Callable<Integer> {
    @Option(names = "--ckpt", required = true, paramLabel = "DIR", description = "the full checkpoint")
    Path ckpt;

    @Option(names = "--subset", required = true, paramLabel = "FILE.json",
            description = "{\"layers\": [[ids] per layer]} or {\"experts\": [ids]} (what select writes); shared experts must be listed")
    Path subset;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "the pruned checkpoint folder")
    Path out;

    @Override
    public Integer call() throws Exception {
        OutputFolders.checkReplaceable(out, "--out");
        MoeModel pruned;
        int[][] kept;
        try (MoeModel full = ModelCheckpoint.importCheckpoint(ckpt, null, false).model()) {
            ModelConfig c = full.config();
            kept = NumericsInputs.readSubset(subset, c);
            pruned = Pruner.prune(full, kept, false);
        }
        try (pruned) {
            JsonNode sub = new ObjectMapper().readTree(subset.toFile());
            String method = sub.path("method").asText("given");
            String calib = sub.hasNonNull("calibration") ? sub.get("calibration").asText() : null;
            Pruner.write(out, pruned, ckpt, Pruner.metadata(OutputFolders.sourceHash(ckpt), ckpt, method, calib, kept));
            ModelConfig pc = pruned.config();
            System.out.println("wrote " + out + ": num_experts " + pc.experts() + ", num_experts_per_tok " + pc.k() + " ("
                    + kept.length + " layers" + (pc.layerExperts() == null ? "" : "; experts per layer " + pc.layerExperts())
                    + (pc.layerK() == null ? "" : "; experts per token per layer " + pc.layerK()) + ")");
        }
        return 0;
    }
}
