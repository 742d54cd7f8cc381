package org.moe4j.engine.inference;

import java.nio.file.Files;
import java.nio.file.Path;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.engine.io.ModelCheckpoint;
import org.moe4j.engine.model.ModelWeights;
import org.moe4j.engine.model.MoeModel;
import org.moe4j.engine.model.ParamLayout;
import org.moe4j.io.checkpoint.Checkpoint;
import org.moe4j.io.checkpoint.CheckpointFolder;
import org.moe4j.engine.config.MemoryEstimate;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.simd.DType;

/**
 * A model loaded for inference: its config, its read-only weights (F32 or BF16 matrices; no gradients, no optimizer
 * state) and its tokenizer when the folder has one. Load once and open any number of {@link Generator}s on it,
 * from any threads: they share the weights and each owns its KV cache.
 *
 * <p>Loading maps the checkpoint. When it holds every tensor under moe4j's names in one file, in parameter order, back
 * to back and in one dtype (what {@code train} and {@code convert} write), the weights are used where they lie in the
 * mapped file (zero copy) if that dtype is the one asked for; otherwise they are read through the Hugging Face
 * importer and converted.
 */
public final class InferenceModel implements AutoCloseable {
    private final ModelConfig config;
    private final ModelWeights weights;
    private final BpeTokenizer tokenizer;
    private final AutoCloseable owner;
    private final boolean inPlace;
    private final String source;

    private InferenceModel(ModelConfig config, ModelWeights weights, BpeTokenizer tokenizer, AutoCloseable owner,
                           boolean inPlace, String source) {
        this.config = config;
        this.weights = weights;
        this.tokenizer = tokenizer;
        this.owner = owner;
        this.inPlace = inPlace;
        this.source = source;
    }

    /** Loads {@code dir} (config.json + safetensors [+ tokenizer.json]) with F32 or BF16 matrices. */
    public static InferenceModel load(Path dir, boolean bf16) {
        if (!Files.isDirectory(dir))
            throw new Moe4jException(dir + ": no such checkpoint folder (expected config.json + model.safetensors)");
        BpeTokenizer tok = Files.exists(dir.resolve("tokenizer.json")) ? BpeTokenizer.load(dir.resolve("tokenizer.json")) : null;
        CheckpointFolder.recover(dir); // a save killed between its renames leaves the last complete folder
        Checkpoint ck = Checkpoint.open(dir);
        try {
            ModelConfig c = ModelCheckpoint.config(ck);
            // a config far larger than the files is reported by the importer before anything is built
            Flat flat = MemoryEstimate.tensors(c) > 4.0 * ck.names().size() + 64 ? null : flat(ck, new ParamLayout(c));
            ParamLayout layout = flat == null ? null : new ParamLayout(c);
            if (flat != null) {
                ModelWeights w = ModelWeights.of(layout, flat.segment, flat.dtype, bf16);
                if (flat.dtype == (bf16 ? DType.BF16 : DType.F32)) // the matrices stay in the mapped file
                    return new InferenceModel(c, w, tok, ck, true, dir.toString());
                ck.close();
                return new InferenceModel(c, w, tok, null, false, dir.toString());
            }
        } catch (RuntimeException e) {
            ck.close();
            throw e;
        }
        ck.close();
        ModelCheckpoint.Imported im = ModelCheckpoint.importCheckpoint(dir, null, false);
        MoeModel m = im.model();
        try {
            if (!bf16) return new InferenceModel(m.config(), ModelWeights.f32(m), tok, m, false, dir.toString());
            ModelWeights w = ModelWeights.bf16(m.layout(), m.params());
            m.close();
            return new InferenceModel(m.config(), w, tok, null, false, dir.toString());
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }

    /** A model of this process (the quickstart's, a test's): F32 shares its parameters, BF16 converts them. */
    public static InferenceModel of(MoeModel model, BpeTokenizer tokenizer, boolean bf16) {
        ModelWeights w = bf16 ? ModelWeights.bf16(model.layout(), model.params()) : ModelWeights.f32(model);
        return new InferenceModel(model.config(), w, tokenizer, null, false, "in-memory model");
    }

    private record Flat(java.lang.foreign.MemorySegment segment, DType dtype) {
    }

    /** The parameters as one flat run of a mapped file, or null when they are not stored that way. */
    private static Flat flat(Checkpoint ck, ParamLayout layout) {
        // tied, with an lm_head stored too: the importer checks that it equals the embedding
        if (layout.config().tied() && ck.fileOf(ParamLayout.lmHead()) != null) return null;
        SafetensorsFile file = null;
        DType dtype = null;
        long base = -1;
        for (ParamLayout.Entry e : layout.entries()) {
            SafetensorsFile f = ck.fileOf(e.name());
            if (f == null || (file != null && f != file)) return null;
            file = f;
            SafetensorsFile.Entry se = f.entry(e.name());
            if (dtype == null) dtype = se.dtype();
            if (se.dtype() != dtype || (dtype != DType.F32 && dtype != DType.BF16)) return null;
            long bytes = dtype.byteSize();
            if (base < 0) base = se.begin() - e.offset() * bytes;
            if (se.begin() != base + e.offset() * bytes || se.end() - se.begin() != e.numel() * bytes) return null;
        }
        if (file == null) return null;
        long bytes = dtype.byteSize();
        java.lang.foreign.MemorySegment seg = file.data().asSlice(base, layout.total() * bytes);
        if (seg.address() % bytes != 0) return null; // unaligned: let the importer copy it
        return new Flat(seg, dtype);
    }

    public ModelConfig config() {
        return config;
    }

    public ModelWeights weights() {
        return weights;
    }

    /** The tokenizer of the checkpoint folder, or null when it has none (token ids only). */
    public BpeTokenizer tokenizer() {
        return tokenizer;
    }

    /** Whether the weights are read where they lie in the mapped checkpoint file. */
    public boolean zeroCopy() {
        return inPlace;
    }

    /** Bytes of weights this model holds or maps. */
    public long weightBytes() {
        return weights.byteSize();
    }

    /** A generator (its own KV cache and scheduler) on these weights. */
    public Generator generator(Generator.Options options) {
        return new Generator(this, options);
    }

    @Override
    public String toString() {
        return source + " (" + (weights.bf16() ? "BF16" : "F32") + " weights" + (inPlace ? ", mapped in place" : "") + ")";
    }

    @Override
    public void close() {
        try {
            weights.close();
        } finally {
            if (owner != null) {
                try {
                    owner.close();
                } catch (Exception e) {
                    throw new Moe4jException(source + ": closing the checkpoint failed: " + e.getMessage(), e);
                }
            }
        }
    }
}
