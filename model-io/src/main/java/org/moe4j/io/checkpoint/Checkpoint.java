package org.moe4j.io.checkpoint;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.io.safetensors.SafetensorsException;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.io.safetensors.SafetensorsWriter;
import org.moe4j.simd.Tensor;

/**
 * A checkpoint folder in the Hugging Face layout ({@link CheckpointDescriptor}), opened read-only: weights are
 * memory-mapped from their shards and handed out as zero-copy views. Writing is atomic for the whole folder.
 */
public final class Checkpoint implements AutoCloseable {
    static final ObjectMapper JSON = JsonMapper.builder().enable(SerializationFeature.INDENT_OUTPUT).build();

    private final Path dir;
    private final HfConfig config;
    private final List<SafetensorsFile> shards;
    private final Map<String, SafetensorsFile> owner;

    private Checkpoint(Path dir, HfConfig config, List<SafetensorsFile> shards, Map<String, SafetensorsFile> owner) {
        this.dir = dir;
        this.config = config;
        this.shards = shards;
        this.owner = owner;
    }

    /** Opens {@code dir}: config.json, then the index and its shards, or model.safetensors. */
    public static Checkpoint open(Path dir) {
        CheckpointFolder.recover(dir);
        HfConfig config = readConfig(dir.resolve(CheckpointDescriptor.CONFIG));
        List<SafetensorsFile> shards = new ArrayList<>();
        Map<String, SafetensorsFile> owner = new LinkedHashMap<>();
        try {
            Path index = dir.resolve(CheckpointDescriptor.INDEX);
            if (Files.exists(index)) {
                JsonNode weightMap = readJson(index).get("weight_map");
                if (weightMap == null || !weightMap.isObject()) {
                    throw new SafetensorsException(index + ": needs a 'weight_map' object of tensor name -> shard file");
                }
                Map<String, SafetensorsFile> byFile = new LinkedHashMap<>();
                for (Map.Entry<String, JsonNode> e : weightMap.properties()) {
                    String file = shardName(index, e.getKey(), e.getValue());
                    SafetensorsFile f = byFile.get(file);
                    if (f == null) {
                        f = SafetensorsFile.open(dir.resolve(file));
                        byFile.put(file, f);
                        shards.add(f);
                    }
                    if (!f.contains(e.getKey())) {
                        throw new SafetensorsException(index + ": tensor '" + e.getKey() + "' is mapped to " + file
                                + ", which does not contain it");
                    }
                    owner.put(e.getKey(), f);
                }
            } else {
                Path single = dir.resolve(CheckpointDescriptor.SINGLE_WEIGHTS);
                if (!Files.exists(single)) {
                    throw new SafetensorsException(dir + ": no " + CheckpointDescriptor.SINGLE_WEIGHTS + " and no "
                            + CheckpointDescriptor.INDEX + " (expected a Hugging Face checkpoint folder)");
                }
                SafetensorsFile f = SafetensorsFile.open(single);
                shards.add(f);
                for (String n : f.names()) {
                    owner.put(n, f);
                }
            }
            return new Checkpoint(dir, config, List.copyOf(shards), Collections.unmodifiableMap(owner));
        } catch (RuntimeException e) {
            shards.forEach(SafetensorsFile::close);
            throw e;
        }
    }

    /** The shard file an index entry names: a plain {@code *.safetensors} name inside the folder. */
    private static String shardName(Path index, String tensor, JsonNode value) {
        String where = index + ": 'weight_map." + tensor + "'";
        if (!value.isTextual()) {
            throw new SafetensorsException(where + " must be a shard file name (a string), found " + value);
        }
        String file = value.textValue();
        for (int i = 0; i < file.length(); i++) {
            char ch = file.charAt(i);
            if (ch == 0) {
                throw new SafetensorsException(where + " = " + value + " contains a NUL character at index " + i
                        + " (expected a shard file name)");
            }
            if (Character.isISOControl(ch)) {
                throw new SafetensorsException(where + " = " + value + " contains control character U+"
                        + String.format("%04X", (int) ch) + " at index " + i + " (expected a shard file name)");
            }
        }
        if (file.contains("/") || file.contains("\\") || file.startsWith(".") || !file.endsWith(".safetensors")) {
            throw new SafetensorsException(where + " must name a shard file in the folder (a *.safetensors name "
                    + "without a path), found " + value);
        }
        return file;
    }

    /** Reads and validates a config.json. */
    public static HfConfig readConfig(Path file) {
        JsonNode node = readJson(file);
        try {
            return JSON.treeToValue(node, HfConfig.class).validate(file.toString());
        } catch (JsonProcessingException e) {
            throw new SafetensorsException(file + ": " + e.getOriginalMessage(), e);
        }
    }

    private static JsonNode readJson(Path file) {
        try {
            JsonNode n = JSON.readTree(file.toFile());
            if (n == null || !n.isObject()) {
                throw new SafetensorsException(file + ": expected a JSON object");
            }
            return n;
        } catch (NoSuchFileException e) {
            throw new SafetensorsException(file + ": file not found", e);
        } catch (JsonProcessingException e) {
            throw new SafetensorsException(file + ": malformed JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new SafetensorsException(file + ": cannot read: " + e, e);
        }
    }

    public Path dir() {
        return dir;
    }

    public HfConfig config() {
        return config;
    }

    /** Tensor names in file order. */
    public List<String> names() {
        return List.copyOf(owner.keySet());
    }

    public boolean contains(String name) {
        return owner.containsKey(name);
    }

    /** The file that holds tensor {@code name}, or null. */
    public SafetensorsFile fileOf(String name) {
        return owner.get(name);
    }

    /** A zero-copy view of tensor {@code name}. */
    public Tensor tensor(String name) {
        SafetensorsFile f = owner.get(name);
        if (f == null) {
            throw new SafetensorsException(dir + ": the checkpoint has no tensor '" + name + "'");
        }
        return f.tensor(name);
    }

    @Override
    public void close() {
        shards.forEach(SafetensorsFile::close);
    }

    /**
     * Writes a checkpoint folder atomically: everything goes to a temporary sibling folder, is forced to disk,
     * and the folder is swapped into place under a lock, so that a crash at any point leaves a checkpoint the next
     * load finds ({@link CheckpointFolder}). Only an absent path, an empty folder or a checkpoint moe4j wrote is
     * replaced; anything else is refused. Tensors
     * go to shards of at most {@code maxShardBytes} (a tensor larger than that gets a shard of its own); one shard
     * is written as model.safetensors without an index.
     */
    public static void write(Path dir, HfConfig config, Map<String, Tensor> tensors, long maxShardBytes) {
        write(dir, config, tensors, maxShardBytes, Map.of(), Map.of(), Map.of());
    }

    /**
     * As {@link #write(Path, HfConfig, Map, long)}, with files beside the weights in the same atomic folder:
     * {@code extraSafetensors} (file name -> tensors, e.g. {@link CheckpointDescriptor#TRAINING_STATE}),
     * {@code extraJson} (file name -> JSON, e.g. training_state.json) and {@code copies} (file name -> a file to
     * copy in, e.g. the tokenizer.json).
     */
    public static void write(Path dir, HfConfig config, Map<String, Tensor> tensors, long maxShardBytes,
                             Map<String, Map<String, Tensor>> extraSafetensors, Map<String, JsonNode> extraJson,
                             Map<String, Path> copies) {
        config.validate(dir.resolve(CheckpointDescriptor.CONFIG).toString());
        Path abs = dir.toAbsolutePath().normalize();
        Path tmp = null;
        try (CheckpointFolder.Lock lock = CheckpointFolder.lock(abs)) {
            CheckpointFolder.recoverLocked(lock, abs);
            CheckpointFolder.requireReplaceable(abs, "cannot write the checkpoint");
            tmp = CheckpointFolder.stage(abs);
            List<Map<String, Tensor>> groups = new ArrayList<>();
            Map<String, Tensor> cur = new LinkedHashMap<>();
            long curBytes = 0;
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                long b = e.getValue().byteSize();
                if (!cur.isEmpty() && curBytes + b > maxShardBytes) {
                    groups.add(cur);
                    cur = new LinkedHashMap<>();
                    curBytes = 0;
                }
                cur.put(e.getKey(), e.getValue());
                curBytes += b;
            }
            groups.add(cur);
            Map<String, String> meta = Map.of("format", "pt", "writer", "moe4j");
            if (groups.size() == 1) {
                SafetensorsWriter.write(tmp.resolve(CheckpointDescriptor.SINGLE_WEIGHTS), groups.get(0), meta);
            } else {
                ObjectNode index = JSON.createObjectNode();
                long total = 0;
                ObjectNode weightMap = JSON.createObjectNode();
                for (int i = 0; i < groups.size(); i++) {
                    String file = CheckpointDescriptor.shard(i, groups.size());
                    SafetensorsWriter.write(tmp.resolve(file), groups.get(i), meta);
                    for (Map.Entry<String, Tensor> e : groups.get(i).entrySet()) {
                        weightMap.put(e.getKey(), file);
                        total += e.getValue().byteSize();
                    }
                }
                index.putObject("metadata").put("total_size", total);
                index.set("weight_map", weightMap);
                writeJson(tmp.resolve(CheckpointDescriptor.INDEX), index);
            }
            writeJson(tmp.resolve(CheckpointDescriptor.CONFIG), JSON.valueToTree(config));
            for (Map.Entry<String, Map<String, Tensor>> e : extraSafetensors.entrySet()) {
                SafetensorsWriter.write(tmp.resolve(e.getKey()), e.getValue(), meta);
            }
            for (Map.Entry<String, JsonNode> e : extraJson.entrySet()) {
                writeJson(tmp.resolve(e.getKey()), e.getValue());
            }
            for (Map.Entry<String, Path> e : copies.entrySet()) {
                Path to = tmp.resolve(e.getKey());
                Files.copy(e.getValue(), to);
                try (FileChannel ch = FileChannel.open(to, StandardOpenOption.WRITE)) {
                    ch.force(true);
                }
            }
            CheckpointFolder.fsyncDir(tmp);
            Path staged = tmp;
            tmp = null; // from here on a failure leaves complete copies that recover() sorts out
            CheckpointFolder.swapIn(staged, abs);
        } catch (IOException e) {
            throw new SafetensorsException(dir + ": cannot write the checkpoint: " + e, e);
        } finally {
            if (tmp != null) {
                try {
                    CheckpointFolder.deleteTree(tmp);
                } catch (IOException ignored) {
                    // the original error is the one to report
                }
            }
        }
    }

    private static void writeJson(Path file, JsonNode node) throws IOException {
        byte[] bytes = JSON.writeValueAsBytes(node);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                ch.write(b);
            }
            ch.force(true);
        }
    }
}
