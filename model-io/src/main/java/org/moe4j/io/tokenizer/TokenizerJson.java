package org.moe4j.io.tokenizer;

import org.moe4j.io.AtomicFile;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.moe4j.Moe4jException;

/**
 * The Hugging Face {@code tokenizer.json} layout of a byte-level BPE, read and written. What is read:
 *
 * <pre>
 * model          {type: "BPE", vocab: {token: id}, merges: ["a b", ...] or [["a","b"], ...],
 *                 unk_token?, ignore_merges?, dropout: null|0, byte_fallback: false,
 *                 continuing_subword_prefix/end_of_word_suffix: null|""}
 * pre_tokenizer  {type: "ByteLevel", add_prefix_space, use_regex}
 *                or {type: "Sequence", pretokenizers: [Split..., ByteLevel]}  (Llama-3, Qwen2 style)
 *                Split = {pattern: {Regex: "..."} or {String: "..."}, behavior: "Isolated", invert: false}
 * decoder        {type: "ByteLevel"} or null
 * normalizer     null
 * added_tokens   [{id, content, special, lstrip/rstrip/single_word: false}]
 * post_processor kept as it is and written back; encode never applies it
 * </pre>
 *
 * Anything else is refused with a message naming the file and the field, rather than encoded differently from
 * the library that wrote it.
 */
final class TokenizerJson {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    private TokenizerJson() {
    }

    static BpeTokenizer read(Path file) {
        String src = file.toString();
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (JsonProcessingException e) {
            throw new Moe4jException(src + ": not valid JSON: " + e.getOriginalMessage()
                    + (e.getLocation() == null ? "" : " at line " + e.getLocation().getLineNr()
                            + ", column " + e.getLocation().getColumnNr()), e);
        } catch (IOException e) {
            throw new Moe4jException(src + ": cannot read: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw fail(src, "(top level)", "is not a JSON object");
        }
        JsonNode model = root.get("model");
        if (model == null || !model.isObject()) {
            throw fail(src, "model", "is missing (expected an object with type BPE, vocab and merges)");
        }
        JsonNode type = model.get("type");
        if (type != null && !"BPE".equals(type.asText())) {
            throw fail(src, "model.type", "is '" + type.asText() + "', expected BPE");
        }
        Map<String, Integer> vocab = readVocab(src, model.get("vocab"));
        List<BpeTokenizer.Merge> merges = readMerges(src, model.get("merges"));
        JsonNode dropout = model.get("dropout");
        if (dropout != null && !dropout.isNull() && dropout.asDouble() != 0) {
            throw fail(src, "model.dropout", "is " + dropout + "; BPE dropout is not supported (expected null)");
        }
        for (String affix : List.of("continuing_subword_prefix", "end_of_word_suffix")) {
            JsonNode a = model.get(affix);
            if (a != null && !a.isNull() && !a.asText().isEmpty()) {
                throw fail(src, "model." + affix, "is '" + a.asText() + "'; not supported by byte-level BPE");
            }
        }
        if (model.path("byte_fallback").asBoolean(false)) {
            throw fail(src, "model.byte_fallback", "is true; byte fallback (SentencePiece style) is not supported");
        }
        JsonNode unk = model.get("unk_token");
        String unkToken = unk == null || unk.isNull() ? null : unk.asText();
        boolean ignoreMerges = model.path("ignore_merges").asBoolean(false);

        JsonNode normalizer = root.get("normalizer");
        if (normalizer != null && !normalizer.isNull()) {
            throw fail(src, "normalizer", "is " + normalizer.path("type").asText("set")
                    + "; normalizers are not supported (byte-level BPE files have none)");
        }
        PreTokenizer pre = readPreTokenizer(src, root.get("pre_tokenizer"));
        JsonNode decoder = root.get("decoder");
        if (decoder != null && !decoder.isNull() && !"ByteLevel".equals(decoder.path("type").asText())) {
            throw fail(src, "decoder.type", "is '" + decoder.path("type").asText() + "', expected ByteLevel");
        }
        List<BpeTokenizer.AddedToken> added = readAddedTokens(src, root.get("added_tokens"));
        JsonNode post = root.get("post_processor");
        return new BpeTokenizer(src, vocab, merges, added, pre, ignoreMerges, unkToken,
                post == null || post.isNull() ? null : post);
    }

    private static Map<String, Integer> readVocab(String src, JsonNode vocab) {
        if (vocab == null || !vocab.isObject()) {
            throw fail(src, "model.vocab", "is missing (expected an object of token -> id)");
        }
        Map<String, Integer> out = new LinkedHashMap<>();
        for (var e : vocab.properties()) {
            JsonNode id = e.getValue();
            if (!id.isIntegralNumber() || !id.canConvertToInt() || id.intValue() < 0) {
                throw fail(src, "model.vocab", "token '" + e.getKey() + "' has id " + id
                        + ", expected a non-negative integer");
            }
            out.put(e.getKey(), id.intValue());
        }
        return out;
    }

    private static List<BpeTokenizer.Merge> readMerges(String src, JsonNode merges) {
        if (merges == null || !merges.isArray()) {
            throw fail(src, "model.merges", "is missing (expected an array of \"a b\" strings or [a, b] pairs)");
        }
        List<BpeTokenizer.Merge> out = new ArrayList<>(merges.size());
        for (int i = 0; i < merges.size(); i++) {
            JsonNode m = merges.get(i);
            if (m.isTextual()) {
                String s = m.textValue();
                int sp = s.indexOf(' ');
                if (sp <= 0 || sp == s.length() - 1 || s.indexOf(' ', sp + 1) >= 0) {
                    throw fail(src, "model.merges[" + i + "]",
                            "is '" + s + "', expected two tokens split by one space");
                }
                out.add(new BpeTokenizer.Merge(s.substring(0, sp), s.substring(sp + 1)));
            } else if (m.isArray() && m.size() == 2 && m.get(0).isTextual() && m.get(1).isTextual()) {
                out.add(new BpeTokenizer.Merge(m.get(0).textValue(), m.get(1).textValue()));
            } else {
                throw fail(src, "model.merges[" + i + "]", "is " + m + ", expected \"a b\" or [\"a\", \"b\"]");
            }
        }
        return out;
    }

    private static PreTokenizer readPreTokenizer(String src, JsonNode node) {
        if (node == null || node.isNull()) {
            throw fail(src, "pre_tokenizer", "is missing (expected ByteLevel, or a Sequence of Split and ByteLevel)");
        }
        String type = node.path("type").asText();
        if ("ByteLevel".equals(type)) {
            return byteLevel(node, List.of());
        }
        if (!"Sequence".equals(type)) {
            throw fail(src, "pre_tokenizer.type", "is '" + type + "', expected ByteLevel or Sequence");
        }
        JsonNode list = node.get("pretokenizers");
        if (list == null || !list.isArray() || list.isEmpty()) {
            throw fail(src, "pre_tokenizer.pretokenizers", "is missing or empty");
        }
        List<PreTokenizer.Stage> splits = new ArrayList<>();
        for (int i = 0; i < list.size(); i++) {
            JsonNode p = list.get(i);
            String field = "pre_tokenizer.pretokenizers[" + i + "]";
            String t = p.path("type").asText();
            if ("ByteLevel".equals(t)) {
                if (i != list.size() - 1) {
                    throw fail(src, field, "is ByteLevel but not last; only Split stages may come before it");
                }
                return byteLevel(p, splits);
            }
            if (!"Split".equals(t)) {
                throw fail(src, field + ".type", "is '" + t + "', expected Split or ByteLevel");
            }
            if (!"Isolated".equals(p.path("behavior").asText())) {
                throw fail(src, field + ".behavior", "is '" + p.path("behavior").asText() + "', expected Isolated");
            }
            if (p.path("invert").asBoolean(false)) {
                throw fail(src, field + ".invert", "is true; not supported");
            }
            JsonNode pattern = p.path("pattern");
            try {
                if (pattern.has("Regex")) {
                    splits.add(PreTokenizer.Stage.regex(pattern.get("Regex").asText()));
                } else if (pattern.has("String")) {
                    splits.add(PreTokenizer.Stage.literal(pattern.get("String").asText()));
                } else {
                    throw fail(src, field + ".pattern",
                            "is " + pattern + ", expected {\"Regex\": ...} or {\"String\": ...}");
                }
            } catch (java.util.regex.PatternSyntaxException e) {
                throw new Moe4jException(src + ": '" + field + ".pattern.Regex' does not compile: " + e.getMessage(),
                        e);
            }
        }
        throw fail(src, "pre_tokenizer.pretokenizers", "has no ByteLevel stage (not a byte-level tokenizer)");
    }

    /** Hugging Face's defaults: add_prefix_space and use_regex both true when absent. */
    private static PreTokenizer byteLevel(JsonNode node, List<PreTokenizer.Stage> splits) {
        return new PreTokenizer(splits, node.path("use_regex").asBoolean(true),
                node.path("add_prefix_space").asBoolean(true));
    }

    private static List<BpeTokenizer.AddedToken> readAddedTokens(String src, JsonNode node) {
        List<BpeTokenizer.AddedToken> out = new ArrayList<>();
        if (node == null || node.isNull()) {
            return out;
        }
        if (!node.isArray()) {
            throw fail(src, "added_tokens", "is " + node.getNodeType() + ", expected an array");
        }
        for (int i = 0; i < node.size(); i++) {
            JsonNode t = node.get(i);
            String field = "added_tokens[" + i + "]";
            JsonNode id = t.get("id");
            JsonNode content = t.get("content");
            if (id == null || !id.isIntegralNumber() || !id.canConvertToInt()) {
                throw fail(src, field + ".id", "is " + id + ", expected an integer");
            }
            if (content == null || !content.isTextual()) {
                throw fail(src, field + ".content", "is " + content + ", expected a string");
            }
            for (String flag : List.of("lstrip", "rstrip", "single_word")) {
                if (t.path(flag).asBoolean(false)) {
                    throw fail(src, field + "." + flag, "is true; not supported (added tokens match exactly)");
                }
            }
            boolean special = t.path("special").asBoolean(false);
            out.add(new BpeTokenizer.AddedToken(id.intValue(), content.textValue(), special));
        }
        return out;
    }

    private static Moe4jException fail(String src, String field, String what) {
        return new Moe4jException(src + ": '" + field + "' " + what);
    }

    static void write(BpeTokenizer tok, Path file) {
        ObjectNode root = NODES.objectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (BpeTokenizer.AddedToken t : tok.addedTokens()) {
            added.addObject().put("id", t.id()).put("content", t.content()).put("single_word", false)
                    .put("lstrip", false).put("rstrip", false).put("normalized", !t.special())
                    .put("special", t.special());
        }
        root.putNull("normalizer");
        root.set("pre_tokenizer", preTokenizerJson(tok.preTokenizer()));
        root.set("post_processor", tok.postProcessor() == null ? NODES.nullNode() : tok.postProcessor());
        root.putObject("decoder").put("type", "ByteLevel").put("add_prefix_space", true).put("trim_offsets", true)
                .put("use_regex", true);
        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        if (tok.unkToken() == null) {
            model.putNull("unk_token");
        } else {
            model.put("unk_token", tok.unkToken());
        }
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("ignore_merges", tok.ignoreMerges());
        ObjectNode vocab = model.putObject("vocab");
        tok.vocab().forEach(vocab::put);
        ArrayNode merges = model.putArray("merges");
        for (BpeTokenizer.Merge m : tok.merges()) {
            merges.addArray().add(m.left()).add(m.right());
        }
        writeAtomically(root, file);
    }

    private static JsonNode preTokenizerJson(PreTokenizer pre) {
        ObjectNode byteLevel = NODES.objectNode().put("type", "ByteLevel")
                .put("add_prefix_space", pre.addPrefixSpace()).put("trim_offsets", true)
                .put("use_regex", pre.byteLevelRegex());
        if (pre.splits().isEmpty()) {
            return byteLevel;
        }
        ObjectNode seq = NODES.objectNode().put("type", "Sequence");
        ArrayNode list = seq.putArray("pretokenizers");
        for (PreTokenizer.Stage s : pre.splits()) {
            ObjectNode split = list.addObject().put("type", "Split");
            split.putObject("pattern").put(s.literal() ? "String" : "Regex", s.source());
            split.put("behavior", "Isolated").put("invert", false);
        }
        list.add(byteLevel);
        return seq;
    }

    private static void writeAtomically(JsonNode root, Path file) {
        try {
            AtomicFile.write(file, tmp -> JSON.writerWithDefaultPrettyPrinter().writeValue(tmp.toFile(), root));
        } catch (IOException e) {
            throw new Moe4jException(file + ": cannot write tokenizer: " + e.getMessage(), e);
        }
    }
}
