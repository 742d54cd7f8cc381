package org.moe4j.io.checkpoint;

/**
 * The files of a checkpoint folder, Hugging Face layout:
 *
 * <pre>
 * config.json                          HfConfig (HF keys + a "moe4j" block)
 * model.safetensors                    all weights, or when sharded:
 * model-00001-of-0000N.safetensors     ... one file per shard, and
 * model.safetensors.index.json         {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}
 * tokenizer.json                       Hugging Face tokenizer (optional)
 * training_state.safetensors           optimizer moments etc. (optional, never needed for inference)
 * training_state.json                  step, data position, random streams (optional, with the moments)
 * </pre>
 */
public final class CheckpointDescriptor {
    private CheckpointDescriptor() {
    }

    public static final String CONFIG = "config.json";
    public static final String SINGLE_WEIGHTS = "model.safetensors";
    public static final String INDEX = "model.safetensors.index.json";
    public static final String TOKENIZER = "tokenizer.json";
    public static final String TRAINING_STATE = "training_state.safetensors";
    public static final String TRAINING_STATE_JSON = "training_state.json";

    /** The file name of shard {@code i} (0-based) of {@code n}. */
    public static String shard(int i, int n) {
        return String.format("model-%05d-of-%05d.safetensors", i + 1, n);
    }
}
