package org.moe4j.engine.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.io.checkpoint.CheckpointFolder;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./moe4j convert}: a Hugging Face MoE checkpoint (EMO, OLMoE, Mixtral) into moe4j's EMO layout. */
@Command(name = "convert", mixinStandardHelpOptions = true,
        description = "Import a Hugging Face MoE checkpoint (model_type emo, olmoe or mixtral; F32, BF16 or F16) "
                + "and write it in the EMO layout (float32, canonical names, config.json with a moe4j block).")
public final class ConvertCommand implements Callable<Integer> {
    @Option(names = "--from", required = true, description = "the checkpoint folder to read") Path from;
    @Option(names = "--out", required = true, description = "the folder to write: absent, empty, or a moe4j "
            + "checkpoint, which is replaced atomically") Path out;

    @Override
    public Integer call() {
        if (Files.exists(out) && Files.exists(from) && sameFile(from, out))
            throw new Moe4jException("--out " + out + " is the --from folder; write the EMO copy somewhere else");
        // refused before the import: a user's folder or file at --out is never replaced
        CheckpointFolder.requireReplaceable(out, "--out " + out);
        ModelCheckpoint.Imported im = ModelCheckpoint.importCheckpoint(from);
        try (MoeModel m = im.model()) {
            ModelConfig c = m.config();
            System.out.printf(Locale.ROOT, "read %s: %s checkpoint, %d tensors%n", from, im.architecture().modelType(),
                    im.tensors());
            for (String note : im.notes()) System.out.println(note);
            int written = ModelCheckpoint.export(out, m, from);
            System.out.printf(Locale.ROOT, "wrote %s: emo layout, %d tensors, %,d parameters (d %d, %d layers, "
                            + "E %d with %d shared, k %d)%n", out, written, m.layout().total(), c.d(), c.layers(),
                    c.experts(), c.sharedExperts(), c.k());
            return 0;
        }
    }

    private static boolean sameFile(Path a, Path b) {
        try {
            return Files.isSameFile(a, b);
        } catch (java.io.IOException e) {
            throw new Moe4jException(a + " / " + b + ": cannot compare: " + e);
        }
    }
}
