package org.moe4j.engine.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Set;
import org.moe4j.Moe4jException;
import org.moe4j.io.checkpoint.CheckpointDescriptor;
import org.moe4j.io.checkpoint.CheckpointFolder;

/**
 * {@code training_state.json}, the scalar half of a checkpoint's training state (the AdamW moments are in
 * {@code training_state.safetensors}). Every field, its JSON name and its rule are here, in one place:
 *
 * <pre>
 * "step"              long >= 0       optimizer steps taken (the next step's index)
 * "data_position"     long >= 0       where the batch source continues
 * "routing_rng_state" long            state of the routing random stream
 * "erc_rng_state"     long            state of ERC's random stream
 * "parameter_count"   long >= 1       parameters of the model the moments belong to
 * "extra"             object, optional {"data": the shard folder (string), "seq": tokens per sequence (int >= 2)}
 * </pre>
 *
 * Numbers must be JSON integers that fit a long (no strings, fractions or nulls); a missing or mistyped field is
 * refused by name. Unknown top-level keys are refused too: they mean another writer, whose state would be misread.
 */
public record TrainingState(long step, long dataPosition, long routingRngState, long ercRngState,
                            long parameterCount, JsonNode extra) {
    public static final String STEP = "step";
    public static final String DATA_POSITION = "data_position";
    public static final String ROUTING_RNG_STATE = "routing_rng_state";
    public static final String ERC_RNG_STATE = "erc_rng_state";
    public static final String PARAMETER_COUNT = "parameter_count";
    public static final String EXTRA = "extra";
    /** Keys of {@link #EXTRA}. */
    public static final String EXTRA_DATA = "data", EXTRA_SEQ = "seq";
    private static final Set<String> KEYS = Set.of(STEP, DATA_POSITION, ROUTING_RNG_STATE, ERC_RNG_STATE,
            PARAMETER_COUNT, EXTRA);
    private static final ObjectMapper JSON = new ObjectMapper();

    public TrainingState {
        String where = CheckpointDescriptor.TRAINING_STATE_JSON;
        if (step < 0) throw new Moe4jException(where + ": '" + STEP + "' = " + step + " must be >= 0");
        if (dataPosition < 0)
            throw new Moe4jException(where + ": '" + DATA_POSITION + "' = " + dataPosition + " must be >= 0");
        if (parameterCount < 1)
            throw new Moe4jException(where + ": '" + PARAMETER_COUNT + "' = " + parameterCount + " must be >= 1");
        if (extra != null && extra.isNull()) extra = null;
        if (extra != null) checkExtra(where, extra);
    }

    /** The shard folder a run trained on ({@code extra.data}), or null. */
    public Path dataFolder() {
        return extra != null && extra.hasNonNull(EXTRA_DATA) ? Path.of(extra.get(EXTRA_DATA).textValue()) : null;
    }

    /** The sequence length a run trained with ({@code extra.seq}), or 0 when not recorded. */
    public int sequenceLength() {
        return extra != null && extra.hasNonNull(EXTRA_SEQ) ? extra.get(EXTRA_SEQ).intValue() : 0;
    }

    /** The JSON object written to the checkpoint. */
    public ObjectNode toJson() {
        ObjectNode o = JsonNodeFactory.instance.objectNode();
        o.put(STEP, step);
        o.put(DATA_POSITION, dataPosition);
        o.put(ROUTING_RNG_STATE, routingRngState);
        o.put(ERC_RNG_STATE, ercRngState);
        o.put(PARAMETER_COUNT, parameterCount);
        if (extra != null) o.set(EXTRA, extra);
        return o;
    }

    /** The training state of checkpoint folder {@code dir}, or null when it has none. */
    public static TrainingState readIfPresent(Path dir) {
        CheckpointFolder.recover(dir);
        Path file = dir.resolve(CheckpointDescriptor.TRAINING_STATE_JSON);
        if (!Files.exists(file)) return null;
        return read(file);
    }

    /** Reads and validates {@code file}. */
    public static TrainingState read(Path file) {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(file));
        } catch (NoSuchFileException e) {
            throw new Moe4jException(file + ": file not found (the checkpoint has no training state to resume from)");
        } catch (JsonProcessingException e) {
            throw new Moe4jException(file + ": malformed JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new Moe4jException(file + ": cannot read: " + e);
        }
        return of(root, file.toString());
    }

    /** Validates a parsed {@code training_state.json}; {@code where} names it in messages. */
    public static TrainingState of(JsonNode root, String where) {
        if (root == null || !root.isObject())
            throw new Moe4jException(where + ": expected a JSON object with " + KEYS);
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!KEYS.contains(k))
                throw new Moe4jException(where + ": unknown key '" + k + "' (expected " + KEYS + ")");
        }
        JsonNode extra = root.get(EXTRA);
        if (extra != null && !extra.isNull()) checkExtra(where, extra);
        long step = longField(root, STEP, where), position = longField(root, DATA_POSITION, where);
        long routing = longField(root, ROUTING_RNG_STATE, where), erc = longField(root, ERC_RNG_STATE, where);
        long params = longField(root, PARAMETER_COUNT, where);
        try {
            return new TrainingState(step, position, routing, erc, params, extra);
        } catch (Moe4jException e) {
            // the record names the file by its name alone; here the path is known
            throw new Moe4jException(where + e.getMessage().substring(CheckpointDescriptor.TRAINING_STATE_JSON.length()));
        }
    }

    private static long longField(JsonNode root, String key, String where) {
        JsonNode v = root.get(key);
        if (v == null || v.isNull())
            throw new Moe4jException(where + ": '" + key + "' is missing (expected an integer)");
        if (!v.isIntegralNumber() || !v.canConvertToLong())
            throw new Moe4jException(where + ": '" + key + "' = " + v + " must be an integer that fits 64 bits");
        return v.longValue();
    }

    private static void checkExtra(String where, JsonNode extra) {
        if (!extra.isObject())
            throw new Moe4jException(where + ": '" + EXTRA + "' = " + extra + " must be an object");
        JsonNode data = extra.get(EXTRA_DATA);
        if (data != null && !data.isNull()) {
            if (!data.isTextual() || data.textValue().isEmpty() || data.textValue().indexOf('\0') >= 0)
                throw new Moe4jException(where + ": '" + EXTRA + "." + EXTRA_DATA + "' = " + data
                        + " must be the path of a shard folder (a non-empty string without NUL)");
        }
        JsonNode seq = extra.get(EXTRA_SEQ);
        if (seq != null && !seq.isNull()) {
            if (!seq.isIntegralNumber() || !seq.canConvertToInt() || seq.intValue() < 2)
                throw new Moe4jException(where + ": '" + EXTRA + "." + EXTRA_SEQ + "' = " + seq
                        + " must be an integer >= 2 (tokens per sequence)");
        }
    }
}
