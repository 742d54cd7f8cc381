package org.moe4j.props.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.moe4j.io.tokenizer.BpeTokenizer;
import org.moe4j.reference.tokenizer.RefBpe;
import org.moe4j.reference.tokenizer.RefBpeTrainer;

/**
 * Byte-level BPE: lossless round trips over valid Unicode (the documented domain: strings without unpaired
 * surrogates), save/load keeps every encoding, and training is deterministic and equal to the recount-everything
 * twin.
 */
class TokenizerProperties {
    static final List<String> SPECIALS = List.of(BpeTokenizer.END_OF_TEXT, "<|pad|>");
    /** Llama-3's pre-tokenizer regex, to check a Sequence[Split, ByteLevel] file as well. */
    static final String LLAMA3_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
            + "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

    private static final BpeTokenizer TRAINED;
    private static final BpeTokenizer RELOADED;
    private static final BpeTokenizer LLAMA3_STYLE;

    static {
        try {
            Path dir = Files.createTempDirectory("moe4j-tokenizer-props");
            dir.toFile().deleteOnExit();
            TRAINED = BpeTokenizer.train(sampleTexts(), 700, SPECIALS, null);
            Path file = dir.resolve("tokenizer.json");
            TRAINED.save(file);
            RELOADED = BpeTokenizer.load(file);
            ObjectMapper json = new ObjectMapper();
            ObjectNode root = (ObjectNode) json.readTree(file.toFile());
            ObjectNode seq = json.createObjectNode().put("type", "Sequence");
            ObjectNode split = seq.putArray("pretokenizers").addObject().put("type", "Split");
            split.putObject("pattern").put("Regex", LLAMA3_PATTERN);
            split.put("behavior", "Isolated").put("invert", false);
            seq.withArray("pretokenizers").addObject().put("type", "ByteLevel").put("add_prefix_space", false)
                    .put("use_regex", false);
            root.set("pre_tokenizer", seq);
            Path llama = dir.resolve("llama3-style.json");
            json.writeValue(llama.toFile(), root);
            LLAMA3_STYLE = BpeTokenizer.load(llama);
            Files.delete(file);
            Files.delete(llama);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Mixed-script sample text, so the trained merges cover ASCII, CJK, emoji and whitespace runs. */
    static List<String> sampleTexts() {
        List<String> t = new ArrayList<>();
        for (int i = 0; i < 40; i++) {
            t.add("The quick brown fox jumps over the lazy dog " + i + " times.\n\n    int x = y + " + (i * 37)
                    + "; // don't, won't, they're<|endoftext|>");
            t.add("混合专家模型把计算分给专家。专家 " + i + " 号很忙。  Ünïcödé café naïve — “quotes” 🙂🚀👍🏽 "
                    + "𝔘𝔫𝔦𝔠𝔬𝔡𝔢\t\ttabs\r\n");
        }
        return t;
    }

    @Provide
    Arbitrary<String> text() {
        Arbitrary<String> ascii = Arbitraries.strings().withCharRange(' ', '~').ofMaxLength(24);
        Arbitrary<String> whitespace = Arbitraries.strings()
                .withChars(' ', '\t', '\n', '\r', '\u000B', '\u00A0', '\u2028', '\u3000').ofMaxLength(8);
        Arbitrary<String> cjk = Arbitraries.strings().withCharRange('\u4E00', '\u9FFF').ofMaxLength(8);
        Arbitrary<String> emoji = Arbitraries.integers().between(0x1F300, 0x1FAFF).map(Character::toString)
                .list().ofMaxSize(4).map(l -> String.join("", l));
        Arbitrary<String> anyCodePoint = Arbitraries.integers().between(0, 0x10FFFF)
                .filter(cp -> cp < Character.MIN_SURROGATE || cp > Character.MAX_SURROGATE)
                .map(Character::toString);
        Arbitrary<String> specials = Arbitraries.of(BpeTokenizer.END_OF_TEXT, "<|pad|>", "<|endoftext", "|>",
                "<|pad|><|endoftext|>");
        Arbitrary<String> digits = Arbitraries.strings().numeric().ofMaxLength(9);
        Arbitrary<String> contractions = Arbitraries.of("'s", "'t", "'re", "'VE", "'ll", "'d", "'m", "''");
        return Arbitraries.frequencyOf(
                        net.jqwik.api.Tuple.of(4, ascii), net.jqwik.api.Tuple.of(2, whitespace),
                        net.jqwik.api.Tuple.of(2, cjk), net.jqwik.api.Tuple.of(1, emoji),
                        net.jqwik.api.Tuple.of(2, anyCodePoint), net.jqwik.api.Tuple.of(1, specials),
                        net.jqwik.api.Tuple.of(1, digits), net.jqwik.api.Tuple.of(1, contractions))
                .list().ofMaxSize(12).map(l -> String.join("", l));
    }

    @Property(tries = 400)
    void decodeOfEncodeIsIdentity(@ForAll("text") String s) {
        assertEquals(s, TRAINED.decode(TRAINED.encode(s)));
        assertEquals(s, LLAMA3_STYLE.decode(LLAMA3_STYLE.encode(s)));
    }

    @Property(tries = 300)
    void savedAndLoadedTokenizerEncodesTheSame(@ForAll("text") String s) {
        assertArrayEquals(TRAINED.encode(s), RELOADED.encode(s));
        assertEquals(TRAINED.vocabSize(), RELOADED.vocabSize());
        assertEquals(TRAINED.eosId(), RELOADED.eosId());
    }

    @Property(tries = 300)
    void specialTokensEncodeAsOneIdEach(@ForAll("text") String before, @ForAll("text") String after) {
        String s = before + BpeTokenizer.END_OF_TEXT + after;
        int[] ids = TRAINED.encode(s);
        long eos = java.util.Arrays.stream(ids).filter(id -> id == TRAINED.eosId()).count();
        int expected = (s.length() - s.replace(BpeTokenizer.END_OF_TEXT, "").length())
                / BpeTokenizer.END_OF_TEXT.length();
        assertEquals(expected, eos);
    }

    /** One pre-token piece (letters, maybe after a space), up to a few thousand bytes: the heap path at length. */
    @Provide
    Arbitrary<String> longPiece() {
        Arbitrary<String> letters = Arbitraries.strings().withChars("thequickbrownfoxéü").ofMinLength(1)
                .ofMaxLength(3000);
        Arbitrary<String> repeats = Arbitraries.of("the", "aa", "ab", "ing", "é").flatMap(
                u -> Arbitraries.integers().between(1, 500).map(u::repeat));
        return Arbitraries.oneOf(letters, repeats).flatMap(
                w -> Arbitraries.of("", " ").map(prefix -> prefix + w));
    }

    @Property(tries = 200)
    void encodingAPieceMatchesTheRescanningTwin(@ForAll("longPiece") String piece) {
        RefBpe twin = new RefBpe(TRAINED.merges().stream().map(m -> m.left() + " " + m.right()).toList());
        List<String> got = java.util.Arrays.stream(TRAINED.encode(piece)).mapToObj(TRAINED::token).toList();
        assertEquals(twin.encodePiece(piece), got);
    }

    @Provide
    Arbitrary<List<String>> corpus() {
        // a small alphabet gives many repeated and overlapping pairs ("aaa"), the cases incremental counts get wrong
        Arbitrary<String> small = Arbitraries.strings().withChars("ab c\n'é😀").ofMaxLength(30);
        return Arbitraries.oneOf(small, text()).list().ofMinSize(1).ofMaxSize(8);
    }

    @Property(tries = 80)
    void trainerMatchesRecountingTwin(@ForAll("corpus") List<String> texts,
            @ForAll @IntRange(min = 258, max = 330) int vocabSize) {
        BpeTokenizer fast = BpeTokenizer.train(texts, vocabSize, SPECIALS, null);
        List<String> expected = RefBpeTrainer.merges(texts, vocabSize, SPECIALS);
        List<String> got = fast.merges().stream().map(m -> m.left() + " " + m.right()).toList();
        assertEquals(expected, got);
    }

    @Property(tries = 40)
    void trainingIsDeterministic(@ForAll("corpus") List<String> texts,
            @ForAll @IntRange(min = 258, max = 400) int vocabSize, @ForAll("text") String probe) {
        BpeTokenizer a = BpeTokenizer.train(texts, vocabSize, SPECIALS, null);
        BpeTokenizer b = BpeTokenizer.train(new ArrayList<>(texts).reversed(), vocabSize, SPECIALS, null);
        assertEquals(a.merges(), b.merges(), "merges do not depend on text order");
        assertEquals(a.vocabSize(), b.vocabSize());
        assertArrayEquals(a.encode(probe), b.encode(probe));
        assertEquals(probe, a.decode(a.encode(probe)));
    }
}
