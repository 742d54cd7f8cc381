package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.Moe4jException;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.reference.tokenizer.RefBpeTrainer;

/** Byte-level BPE by example: a hand-written GPT-2 file, bad files, and what training produces. */
class TokenizerTest {
    @TempDir
    Path tmp;

    /** A GPT-2 format tokenizer.json that knows just enough to spell "Hello world". */
    static final String TINY = """
            {
              "version": "1.0",
              "truncation": null,
              "padding": null,
              "added_tokens": [
                {"id": 17, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,
                 "normalized": true, "special": true}
              ],
              "normalizer": null,
              "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
              "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
              "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
              "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "He": 8, "ll": 9,
                          "Hell": 10, "Hello": 11, "Ġw": 12, "or": 13, "Ġwor": 14, "ld": 15, "Ġworld": 16,
                          "<|endoftext|>": 17},
                "merges": MERGES
              }
            }
            """;
    static final String MERGES_AS_STRINGS =
            "[\"H e\", \"l l\", \"He ll\", \"Hell o\", \"Ġ w\", \"o r\", \"Ġw or\", \"l d\", \"Ġwor ld\"]";
    static final String MERGES_AS_PAIRS = "[[\"H\",\"e\"], [\"l\",\"l\"], [\"He\",\"ll\"], [\"Hell\",\"o\"], "
            + "[\"Ġ\",\"w\"], [\"o\",\"r\"], [\"Ġw\",\"or\"], [\"l\",\"d\"], [\"Ġwor\",\"ld\"]]";

    private Path write(String name, String json) throws IOException {
        Path p = tmp.resolve(name);
        Files.writeString(p, json);
        return p;
    }

    @Test
    void gpt2FormatFileEncodesHelloWorld() throws IOException {
        for (String merges : List.of(MERGES_AS_STRINGS, MERGES_AS_PAIRS)) {
            BpeTokenizer tok = BpeTokenizer.load(write("tiny.json", TINY.replace("MERGES", merges)));
            assertArrayEquals(new int[] {11, 16}, tok.encode("Hello world"));
            assertArrayEquals(new int[] {11, 16, 17, 11}, tok.encode("Hello world<|endoftext|>Hello"));
            assertArrayEquals(new int[] {8, 15}, tok.encode("Held"));
            assertEquals("Hello world<|endoftext|>", tok.decode(new int[] {11, 16, 17}));
            assertEquals(18, tok.vocabSize());
            assertEquals(17, tok.eosId());
            assertEquals(16, tok.tokenId("Ġworld"));
            assertEquals("Ġworld", tok.token(16));
        }
    }

    /** Llama-3 sets ignore_merges: a piece that is itself a token is taken whole, even where merges never reach it. */
    @Test
    void ignoreMergesTakesWholePieces() throws IOException {
        String withHed = TINY.replace("MERGES", MERGES_AS_STRINGS)
                .replace("\"<|endoftext|>\": 17}", "\"<|endoftext|>\": 17, \"Hed\": 18}");
        assertArrayEquals(new int[] {8, 7}, BpeTokenizer.load(write("a.json", withHed)).encode("Hed"));
        BpeTokenizer ignoring = BpeTokenizer.load(write("b.json",
                withHed.replace("\"byte_fallback\": false,", "\"byte_fallback\": false, \"ignore_merges\": true,")));
        assertArrayEquals(new int[] {18, 17, 8, 15}, ignoring.encode("Hed<|endoftext|>Held"));
        Path resaved = tmp.resolve("c.json");
        ignoring.save(resaved);
        assertArrayEquals(new int[] {18}, BpeTokenizer.load(resaved).encode("Hed"));
    }

    @Test
    void tinyFileSurvivesSaveAndLoad() throws IOException {
        BpeTokenizer tok = BpeTokenizer.load(write("tiny.json", TINY.replace("MERGES", MERGES_AS_STRINGS)));
        Path again = tmp.resolve("again/tokenizer.json");
        tok.save(again);
        BpeTokenizer back = BpeTokenizer.load(again);
        assertArrayEquals(tok.encode("Hello world<|endoftext|>"), back.encode("Hello world<|endoftext|>"));
        assertEquals(tok.merges(), back.merges());
        assertEquals(tok.addedTokens(), back.addedTokens());
        tok.save(again); // replaces the file, leaves no temp file behind
        try (var files = Files.list(again.getParent())) {
            assertEquals(List.of(again), files.toList());
        }
    }

    private void assertRejected(String json, String... expectedInMessage) throws IOException {
        Path p = write("bad.json", json);
        Moe4jException e = assertThrows(Moe4jException.class, () -> BpeTokenizer.load(p));
        assertTrue(e.getMessage().contains(p.toString()), "names the file: " + e.getMessage());
        for (String s : expectedInMessage) {
            assertTrue(e.getMessage().contains(s), "mentions " + s + ": " + e.getMessage());
        }
    }

    @Test
    void badFilesNameTheFileAndField() throws IOException {
        String ok = TINY.replace("MERGES", MERGES_AS_STRINGS);
        assertRejected("{\"model\": {\"vocab\": ", "not valid JSON");
        assertRejected("[1, 2]", "top level");
        assertRejected(ok.replace("\"vocab\":", "\"vocabulary\":"), "'model.vocab'", "missing");
        assertRejected(ok.replace("\"merges\":", "\"mergez\":"), "'model.merges'");
        assertRejected(ok.replace("\"l d\"", "\"l x\""), "'model.merges[7]'", "'x'");
        assertRejected(ok.replace("\"l d\"", "\"ld\""), "'model.merges[7]'", "one space");
        assertRejected(ok.replace("\"Hello\": 11", "\"Hello\": \"eleven\""), "'model.vocab'", "Hello");
        assertRejected(ok.replace("\"type\": \"BPE\"", "\"type\": \"WordPiece\""), "'model.type'", "WordPiece");
        assertRejected(ok.replace("\"type\": \"ByteLevel\", \"add_prefix_space\": false",
                "\"type\": \"Whitespace\", \"add_prefix_space\": false"), "'pre_tokenizer.type'");
        assertRejected(ok.replace("\"id\": 17", "\"id\": \"x\""), "'added_tokens[0].id'");
        assertRejected(ok.replace("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}"), "'normalizer'");
        assertRejected(ok.replace("\"Ġworld\": 16", "\"Ġworld\": 15"), "'model.vocab'", "id 15");
        String byteLevel = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
                + "\"use_regex\": true}";
        String split = "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d\"}, \"behavior\": \"BEHAVIOR\"}";
        assertRejected(ok.replace(byteLevel, "{\"type\": \"Sequence\", \"pretokenizers\": [" + byteLevel + ", "
                + split.replace("BEHAVIOR", "Isolated") + "]}"), "'pre_tokenizer.pretokenizers[0]'", "not last");
        assertRejected(ok.replace(byteLevel, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                + split.replace("BEHAVIOR", "Removed") + ", " + byteLevel + "]}"),
                "'pre_tokenizer.pretokenizers[0].behavior'", "Removed");
        assertRejected(ok.replace(byteLevel, "{\"type\": \"Sequence\", \"pretokenizers\": ["
                + split.replace("BEHAVIOR", "Isolated").replace("\\\\d", "(") + ", " + byteLevel + "]}"),
                "'pre_tokenizer.pretokenizers[0].pattern.Regex'");
        assertRejected(ok.replace("\"lstrip\": false", "\"lstrip\": true"), "'added_tokens[0].lstrip'");
        assertRejected(ok.replace("\"byte_fallback\": false", "\"byte_fallback\": true"), "'model.byte_fallback'");
    }

    @Test
    void missingByteAndBadIdsAreNamed() throws IOException {
        Path p = write("tiny.json", TINY.replace("MERGES", MERGES_AS_STRINGS));
        BpeTokenizer tok = BpeTokenizer.load(p);
        Moe4jException e = assertThrows(Moe4jException.class, () -> tok.encode("Hi"));
        assertTrue(e.getMessage().contains(p.toString()) && e.getMessage().contains("0x69"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> tok.decode(new int[] {3, 18}));
        assertTrue(e.getMessage().contains("token id 18") && e.getMessage().contains("[0, 18)"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> tok.tokenId("world"));
        assertTrue(e.getMessage().contains("'world'"), e.getMessage());
    }

    @Test
    void llama3StyleSequenceSplitsDigitsInThrees() throws IOException {
        BpeTokenizer trained = BpeTokenizer.train(List.of("123\n45\n12345"), 300, null, null);
        Path p = tmp.resolve("t.json");
        trained.save(p);
        String json = Files.readString(p).replaceFirst("\"pre_tokenizer\" : \\{[^}]*\\}", java.util.regex.Matcher
                .quoteReplacement("\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                        + "{\"type\": \"Split\", \"pattern\": {\"Regex\": "
                        + new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsString(
                                TokenizerProperties.LLAMA3_PATTERN)
                        + "}, \"behavior\": \"Isolated\", \"invert\": false},"
                        + "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}"));
        BpeTokenizer llama = BpeTokenizer.load(write("llama.json", json));
        // GPT-2's regex keeps "12345" as one piece; Llama-3's cuts it into "123" and "45"
        assertEquals(1, trained.encode("12345").length);
        int[] ids = llama.encode("12345");
        assertEquals(2, ids.length);
        assertEquals("123", llama.decode(new int[] {ids[0]}));
        Path resaved = tmp.resolve("llama-resaved.json");
        llama.save(resaved);
        assertArrayEquals(ids, BpeTokenizer.load(resaved).encode("12345"));
    }

    private static Path resource(String name) throws URISyntaxException {
        return Path.of(TokenizerTest.class.getResource("/tokenizer/" + name).toURI());
    }

    /**
     * Golden files from Hugging Face {@code tokenizers} (see corpus.json's "generator"): its trainer's file, read
     * here, encodes the probes to its ids (also with Llama-3's Split regex, hf-llama3-style.json; the probes mix
     * Unicode white space, digits, combining marks, emoji and random code points), and our trainer on the same corpus learns the same vocabulary and merges.
     */
    @Test
    void agreesWithHuggingFaceTokenizers() throws IOException, URISyntaxException {
        ObjectMapper json = new ObjectMapper();
        BpeTokenizer hf = BpeTokenizer.load(resource("hf-trained.json"));
        JsonNode enc = json.readTree(resource("hf-encodings.json").toFile());
        for (int i = 0; i < enc.get("probes").size(); i++) {
            String probe = enc.get("probes").get(i).asText();
            int[] expected = json.convertValue(enc.get("ids").get(i), int[].class);
            assertArrayEquals(expected, hf.encode(probe), probe);
            assertEquals(probe, hf.decode(expected));
        }
        BpeTokenizer llama = BpeTokenizer.load(resource("hf-llama3-style.json"));
        JsonNode l3 = enc.get("llama3_style");
        for (int i = 0; i < l3.get("probes").size(); i++) {
            String probe = l3.get("probes").get(i).asText();
            assertArrayEquals(json.convertValue(l3.get("ids").get(i), int[].class), llama.encode(probe), probe);
        }
        List<String> corpus = new ArrayList<>();
        json.readTree(resource("corpus.json").toFile()).get("texts").forEach(t -> corpus.add(t.asText()));
        BpeTokenizer ours = BpeTokenizer.train(corpus, 400, null, null);
        assertEquals(hf.merges(), ours.merges());
        for (int id = 0; id < hf.vocabSize(); id++) {
            assertEquals(hf.token(id), ours.token(id), "token " + id);
        }
    }

    /** One tokenizer shared by threads (shard writing does this): same ids as a single thread, cache and all. */
    @Test
    void encodesFromManyThreadsAtOnce() throws Exception {
        BpeTokenizer tok = BpeTokenizer.train(prose(), 330, null, null);
        List<String> texts = new ArrayList<>();
        for (int i = 0; i < 200; i++) {
            texts.add(prose().get(i % 20) + " variant " + i + " " + "x".repeat(i % 50));
        }
        List<int[]> expected = texts.stream().map(BpeTokenizer.train(prose(), 330, null, null)::encode).toList();
        try (var pool = java.util.concurrent.Executors.newFixedThreadPool(4)) {
            List<java.util.concurrent.Future<?>> done = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int offset = t * 37;
                done.add(pool.submit(() -> {
                    for (int i = 0; i < texts.size(); i++) {
                        int k = (i + offset) % texts.size();
                        assertArrayEquals(expected.get(k), tok.encode(texts.get(k)));
                    }
                }));
            }
            for (var f : done) {
                f.get();
            }
        }
    }

    @Test
    void unpairedSurrogateBecomesQuestionMark() {
        BpeTokenizer tok = BpeTokenizer.train(List.of("abc"), 260, null, null);
        assertEquals("a?b", tok.decode(tok.encode("a\uD800b")));
    }

    static List<String> prose() {
        String base = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
                + "age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ";
        List<String> t = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            t.add(base + "Chapter " + i + ".\n<|endoftext|>");
        }
        return t;
    }

    @Test
    void trainingReachesTheRequestedSizeWithFrequentPairs() {
        List<Integer> progress = new ArrayList<>();
        BpeTokenizer tok = BpeTokenizer.train(prose(), 330, null, progress::add);
        assertEquals(330, tok.vocabSize());
        assertEquals(0, tok.eosId());
        assertEquals(330, progress.getLast());
        assertEquals(tok.merges().size(), progress.size());
        // the first merge is a most frequent adjacent byte pair over the pre-token words
        Map<String, Long> pairs = new HashMap<>();
        char[] bc = RefBpeTrainer.byteChars();
        Pattern gpt2 = Pattern.compile(
                "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
        for (String text : prose()) {
            Matcher m = gpt2.matcher(text.replace(BpeTokenizer.END_OF_TEXT, "\n"));
            while (m.find()) {
                byte[] b = m.group().getBytes(java.nio.charset.StandardCharsets.UTF_8);
                for (int i = 0; i + 1 < b.length; i++) {
                    pairs.merge(bc[b[i] & 0xFF] + " " + bc[b[i + 1] & 0xFF], 1L, Long::sum);
                }
            }
        }
        long max = pairs.values().stream().mapToLong(Long::longValue).max().orElseThrow();
        BpeTokenizer.Merge first = tok.merges().getFirst();
        assertEquals(max, pairs.get(first.left() + " " + first.right()));
        // frequent words become one token; the special token is never merged into anything
        assertEquals(1, tok.encode(" times").length);
        assertEquals(1, tok.encode(" was").length);
        assertFalse(tok.merges().stream().anyMatch(m -> (m.left() + m.right()).contains("endoftext")));
        String s = prose().getFirst();
        assertEquals(s, tok.decode(tok.encode(s)));
    }

    @Test
    void trainingStopsWhenPairsRunOutAndChecksItsArguments() {
        BpeTokenizer tok = BpeTokenizer.train(List.of("ab"), 1000, List.of(), null);
        assertEquals(257, tok.vocabSize());
        assertEquals(List.of(new BpeTokenizer.Merge("a", "b")), tok.merges());
        Moe4jException e = assertThrows(Moe4jException.class, () -> BpeTokenizer.train(List.of("ab"), 200, null, null));
        assertTrue(e.getMessage().contains("vocabSize = 200"), e.getMessage());
        e = assertThrows(Moe4jException.class, () -> BpeTokenizer.train(List.of("ab"), 300, List.of("!"), null));
        assertTrue(e.getMessage().contains("'!'"), e.getMessage());
        assertThrows(Moe4jException.class, () -> tok.eosId());
    }
}
