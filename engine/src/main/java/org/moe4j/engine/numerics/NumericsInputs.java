package org.moe4j.engine.numerics;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Iterator;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.config.ModelConfig;
import org.moe4j.io.safetensors.SafetensorsFile;
import org.moe4j.simd.Tensor;

/**
 * The input files and option strings of {@code ./moe4j numerics}, read and checked against the checkpoint's shape.
 * Every error names the file (or option), the field with its index path, and what was expected.
 *
 * <pre>
 *   tokens:  {"tokens": [[ids...], ...], "eos_id": N}                    sequences may differ in length
 *   pools:   {"pool_sizes": P} | {"pool_sizes": [P per layer]} | {"pool_sizes": [[[P per document] per sequence] per layer]}
 *   subset:  {"experts": [ids]} | {"layers": [[ids] per layer]}           full-model ids, shared experts included
 *   noise:   safetensors with model.layers.{l}.erc_noise [E - s, d], u in [-1, 1]
 * </pre>
 */
public final class NumericsInputs {
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    private static final Pattern NOISE = Pattern.compile("model\\.layers\\.(0|[1-9][0-9]{0,8})\\.erc_noise");

    private NumericsInputs() {
    }

    /**
     * The token batch: sequences, the EOS id that opens documents, and the documents of each sequence (position 0
     * opens one, every later EOS opens the next).
     */
    public record Tokens(int[][] sequences, int eosId, int[] documents) {
        public int count() {
            int n = 0;
            for (int[] s : sequences) n += s.length;
            return n;
        }

        public int longest() {
            int n = 0;
            for (int[] s : sequences) n = Math.max(n, s.length);
            return n;
        }

        /** seqStart[0..B]: offsets of the sequences in {@link #flat()}. */
        public int[] starts() {
            int[] st = new int[sequences.length + 1];
            for (int b = 0; b < sequences.length; b++) st[b + 1] = st[b] + sequences[b].length;
            return st;
        }

        public int[] flat() {
            int[] st = starts(), f = new int[count()];
            for (int b = 0; b < sequences.length; b++) System.arraycopy(sequences[b], 0, f, st[b], sequences[b].length);
            return f;
        }
    }

    /** Reads a JSON file; the message names the file and the place of a syntax error. */
    static JsonNode readJson(Path file) {
        if (!Files.isRegularFile(file)) throw new Moe4jException(file + ": no such file");
        try {
            JsonNode n = JSON.readTree(file.toFile());
            if (n == null || n.isMissingNode()) throw new Moe4jException(file + ": malformed JSON: the file is empty");
            return n;
        } catch (JsonProcessingException e) {
            var loc = e.getLocation();
            throw new Moe4jException(file + ": malformed JSON: " + e.getOriginalMessage()
                    + (loc == null ? "" : " (line " + loc.getLineNr() + ", column " + loc.getColumnNr() + ")"), e);
        } catch (IOException e) {
            throw new Moe4jException(file + ": cannot read the file: " + e.getMessage(), e);
        }
    }

    private static void onlyFields(Path file, JsonNode root, Set<String> allowed) {
        if (!root.isObject())
            throw new Moe4jException(file + ": the top level must be a JSON object with " + allowed + ", found " + root.getNodeType());
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!allowed.contains(f)) throw new Moe4jException(file + ": unknown field '" + f + "' (expected " + allowed + ")");
        }
    }

    private static int intAt(Path file, JsonNode n, String where) {
        if (n == null || !n.isIntegralNumber() || !n.canConvertToInt())
            throw new Moe4jException(file + ": " + where + " = " + n + ": expected an integer");
        return n.intValue();
    }

    private static JsonNode arrayAt(Path file, JsonNode n, String where, int size) {
        if (n == null || !n.isArray())
            throw new Moe4jException(file + ": " + where + " = " + abbreviate(n) + ": expected an array"
                    + (size >= 0 ? " of " + size : ""));
        if (size >= 0 && n.size() != size)
            throw new Moe4jException(file + ": " + where + " has " + n.size() + " entries, expected " + size);
        return n;
    }

    private static String abbreviate(JsonNode n) {
        String s = String.valueOf(n);
        return s.length() > 40 ? s.substring(0, 37) + "..." : s;
    }

    /** The tokens file, checked against the vocabulary; eos_id defaults to the checkpoint's. */
    public static Tokens readTokens(Path file, int vocab, int defaultEos) {
        JsonNode root = readJson(file);
        onlyFields(file, root, Set.of("tokens", "eos_id"));
        int eos = defaultEos;
        if (root.has("eos_id")) {
            eos = intAt(file, root.get("eos_id"), "field 'eos_id'");
            if (eos < 0 || eos >= vocab)
                throw new Moe4jException(file + ": field 'eos_id' = " + eos + " is outside the vocabulary [0, " + vocab + ")");
        }
        JsonNode t = root.get("tokens");
        if (t == null) throw new Moe4jException(file + ": field 'tokens' is missing (expected [[ids...], ...])");
        arrayAt(file, t, "field 'tokens'", -1);
        if (t.isEmpty()) throw new Moe4jException(file + ": field 'tokens' holds no sequence");
        int[][] seqs = new int[t.size()][];
        int[] docs = new int[t.size()];
        for (int b = 0; b < t.size(); b++) {
            JsonNode s = arrayAt(file, t.get(b), "tokens[" + b + "]", -1);
            if (s.isEmpty()) throw new Moe4jException(file + ": tokens[" + b + "] is an empty sequence");
            seqs[b] = new int[s.size()];
            docs[b] = 1;
            for (int i = 0; i < s.size(); i++) {
                JsonNode v = s.get(i);
                if (!v.isIntegralNumber() || !v.canConvertToLong())
                    throw new Moe4jException(file + ": tokens[" + b + "][" + i + "] = " + abbreviate(v) + ": expected an integer token id");
                long id = v.longValue();
                if (id < 0 || id >= vocab)
                    throw new Moe4jException(file + ": token " + id + " at tokens[" + b + "][" + i
                            + "] is outside the checkpoint's vocabulary [0, " + vocab + ")");
                seqs[b][i] = (int) id;
                if (i > 0 && id == eos) docs[b]++;
            }
        }
        return new Tokens(seqs, eos, docs);
    }

    /**
     * The pool sizes file as [layer][sequence][document], each in [1, routed]; the three forms of 'pool_sizes'
     * (one size, one per layer, one per layer, sequence and document) are expanded.
     */
    public static int[][][] readPools(Path file, int layers, int[] documents, int routed) {
        JsonNode root = readJson(file);
        onlyFields(file, root, Set.of("pool_sizes"));
        JsonNode v = root.get("pool_sizes");
        if (v == null)
            throw new Moe4jException(file + ": field 'pool_sizes' is missing (expected P, [P per layer] or "
                    + "[[[P per document] per sequence] per layer])");
        int B = documents.length;
        int[][][] out = new int[layers][B][];
        if (!v.isArray()) {
            int p = poolSize(file, v, "pool_sizes", routed);
            for (int l = 0; l < layers; l++) for (int b = 0; b < B; b++) Arrays.fill(out[l][b] = new int[documents[b]], p);
            return out;
        }
        arrayAt(file, v, "pool_sizes", layers);
        boolean perLayer = true;
        for (JsonNode x : v) perLayer &= !x.isArray();
        for (int l = 0; l < layers; l++) {
            String at = "pool_sizes[" + l + "]";
            if (perLayer) {
                int p = poolSize(file, v.get(l), at, routed);
                for (int b = 0; b < B; b++) Arrays.fill(out[l][b] = new int[documents[b]], p);
                continue;
            }
            JsonNode ly = arrayAt(file, v.get(l), at + " (one entry per sequence)", B);
            for (int b = 0; b < B; b++) {
                String atb = at + "[" + b + "]";
                JsonNode sq = arrayAt(file, ly.get(b), atb + " (one size per document of sequence " + b + ")", documents[b]);
                out[l][b] = new int[documents[b]];
                for (int d = 0; d < documents[b]; d++) out[l][b][d] = poolSize(file, sq.get(d), atb + "[" + d + "]", routed);
            }
        }
        return out;
    }

    private static int poolSize(Path file, JsonNode n, String where, int routed) {
        int p = intAt(file, n, where);
        if (p < 1 || p > routed)
            throw new Moe4jException(file + ": " + where + " = " + p + ": pool size is outside [1, " + routed
                    + "] (1 .. the routed experts E - s)");
        return p;
    }

    /** The subset file as [layer] sorted full-model ids; every shared expert and at least one routed one kept. */
    public static int[][] readSubset(Path file, int layers, int experts, int shared) {
        int[] e = new int[layers];
        Arrays.fill(e, experts);
        return readSubset(file, e, shared);
    }

    /** The subset of a model with its own E_l per layer: layer l's ids are checked against its E_l experts. */
    public static int[][] readSubset(Path file, ModelConfig c) {
        int[] e = new int[c.layers()];
        for (int l = 0; l < e.length; l++) e[l] = c.experts(l);
        return readSubset(file, e, c.sharedExperts());
    }

    /** As {@link #readSubset(Path, int, int, int)} with experts[l] experts in layer l. */
    public static int[][] readSubset(Path file, int[] experts, int shared) {
        int layers = experts.length;
        JsonNode root = readJson(file);
        java.util.Set<String> allowed = new java.util.HashSet<>(org.moe4j.engine.subset.SubsetFile.DESCRIPTIVE_FIELDS);
        allowed.addAll(Set.of("experts", "layers")); // select's subset.json adds how it was chosen
        onlyFields(file, root, allowed);
        if (root.has("experts") == root.has("layers"))
            throw new Moe4jException(file + ": give exactly one of 'experts' ([ids] for every layer) or 'layers' ([[ids] per layer])");
        int[][] out = new int[layers][];
        if (root.has("experts")) {
            for (int l = 0; l < layers; l++) out[l] = subsetIds(file, root.get("experts"), "experts", experts[l], shared);
        } else {
            JsonNode ls = arrayAt(file, root.get("layers"), "layers", layers);
            for (int l = 0; l < layers; l++) out[l] = subsetIds(file, ls.get(l), "layers[" + l + "]", experts[l], shared);
        }
        return out;
    }

    private static int[] subsetIds(Path file, JsonNode n, String where, int experts, int shared) {
        arrayAt(file, n, where, -1);
        boolean[] seen = new boolean[experts];
        int routed = experts - shared, keptRouted = 0;
        for (int i = 0; i < n.size(); i++) {
            int e = intAt(file, n.get(i), where + "[" + i + "]");
            if (e < 0 || e >= experts)
                throw new Moe4jException(file + ": " + where + "[" + i + "] = " + e + ": expert id is outside [0, " + experts + ")");
            if (seen[e]) throw new Moe4jException(file + ": " + where + " names expert " + e + " twice");
            seen[e] = true;
            if (e < routed) keptRouted++;
        }
        for (int e = routed; e < experts; e++)
            if (!seen[e])
                throw new Moe4jException(file + ": " + where + " drops shared expert " + e + " (the shared experts "
                        + routed + ".." + (experts - 1) + " must all be kept)");
        if (keptRouted == 0)
            throw new Moe4jException(file + ": " + where + " keeps no routed expert (routed ids are 0.." + (routed - 1) + ")");
        int[] ids = new int[n.size()];
        for (int e = 0, j = 0; e < experts; e++) if (seen[e]) ids[j++] = e;
        return ids;
    }

    /** "--k-per-layer 2,2,1": one routed k' per layer (or one for all), each in [1, routed]. */
    public static int[] parseKPerLayer(String spec, int layers, int routed) {
        String[] parts = spec.split(",", -1);
        if (parts.length != layers && parts.length != 1)
            throw new Moe4jException("--k-per-layer " + spec + ": " + parts.length + " values, the checkpoint has "
                    + layers + " layers (give one value per layer, or one for all)");
        int[] k = new int[layers];
        for (int i = 0; i < parts.length; i++) {
            int v;
            try {
                v = Integer.parseInt(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new Moe4jException("--k-per-layer " + spec + ": entry " + i + " '" + parts[i] + "' is not an integer");
            }
            if (v < 1 || v > routed)
                throw new Moe4jException("--k-per-layer " + spec + ": entry " + i + " = " + v + " is outside [1, "
                        + routed + "] (routed k', shared experts not counted)");
            k[i] = v;
        }
        if (parts.length == 1) Arrays.fill(k, k[0]);
        return k;
    }

    /** "--weights lb=..,z=..,erc=..,out_z=..": overrides of the checkpoint's loss weights; omitted keys keep theirs. */
    public static LossWeights parseWeights(String spec, LossWeights base) {
        double lb = base.lb(), z = base.routerZ(), erc = base.erc(), outZ = base.outputZ();
        for (String part : spec.split(",", -1)) {
            int eq = part.indexOf('=');
            if (eq < 0) throw new Moe4jException("--weights " + spec + ": '" + part + "' is not key=value (keys lb, z, erc, out_z)");
            String key = part.substring(0, eq).trim(), val = part.substring(eq + 1).trim();
            double w;
            try {
                w = Double.parseDouble(val);
            } catch (NumberFormatException e) {
                throw new Moe4jException("--weights " + spec + ": " + key + " = '" + val + "' is not a number");
            }
            if (!(w >= 0) || Double.isInfinite(w))
                throw new Moe4jException("--weights " + spec + ": " + key + " = " + val + " must be finite and >= 0");
            switch (key) {
                case "lb" -> lb = w;
                case "z" -> z = w;
                case "erc" -> erc = w;
                case "out_z" -> outZ = w;
                default -> throw new Moe4jException("--weights " + spec + ": unknown key '" + key + "' (keys lb, z, erc, out_z)");
            }
        }
        return new LossWeights(lb, z, erc, outZ, base.ercAlpha());
    }

    /** The ERC noise file as [layer][(E - s) * d] (row e = routed expert e), every u finite and in [-1, 1]. */
    public static float[][] readErcNoise(Path file, int layers, int routed, int d) {
        if (!Files.isRegularFile(file)) throw new Moe4jException(file + ": no such file");
        float[][] out = new float[layers][];
        try (SafetensorsFile f = SafetensorsFile.open(file); Arena arena = Arena.ofConfined()) {
            for (String name : f.names()) {
                Matcher m = NOISE.matcher(name);
                if (!m.matches() || Long.parseLong(m.group(1)) >= layers)
                    throw new Moe4jException(file + ": unknown tensor '" + name + "' (expected model.layers.{l}.erc_noise for l in 0.."
                            + (layers - 1) + ")");
            }
            for (int l = 0; l < layers; l++) {
                String name = "model.layers." + l + ".erc_noise";
                if (!f.contains(name))
                    throw new Moe4jException(file + ": tensor '" + name + "' is missing (one per layer, shape [E - s, d] = ["
                            + routed + ", " + d + "])");
                int[] shape = f.entry(name).shape();
                if (!Arrays.equals(shape, new int[] {routed, d}))
                    throw new Moe4jException(file + ": tensor '" + name + "' has shape " + Arrays.toString(shape)
                            + ", expected [E - s, d] = [" + routed + ", " + d + "]");
                Tensor t = f.tensorF32(name, arena);
                float[] u = t.toFloatArray();
                for (int i = 0; i < u.length; i++)
                    if (!(u[i] >= -1f && u[i] <= 1f))
                        throw new Moe4jException(file + ": tensor '" + name + "' [" + i / d + ", " + i % d + "] = " + u[i]
                                + ": u must be in [-1, 1]");
                out[l] = u;
            }
        }
        return out;
    }
}
