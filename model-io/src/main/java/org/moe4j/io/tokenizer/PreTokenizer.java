package org.moe4j.io.tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Splits text into the pieces ("words") BPE merges within. Each stage is a regex whose matches, and the text
 * between them, become pieces (Hugging Face's {@code Split} with behaviour {@code Isolated}); stages apply one
 * after the other. The pieces always cover the text exactly, so nothing is lost before byte-level encoding.
 *
 * <p>GPT-2's ByteLevel pre-tokenizer is the single stage {@link #GPT2_PATTERN}; Llama-3 style files put their own
 * {@code Split} regex first and a ByteLevel with {@code use_regex: false} after it.
 */
final class PreTokenizer {
    /** GPT-2's pre-tokenisation regex. */
    static final String GPT2_PATTERN =
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    /** {@code \s} means Unicode white space, as in the Rust and Python regex engines these patterns come from. */
    private static final int FLAGS = Pattern.UNICODE_CHARACTER_CLASS;

    /** One stage: the regex source as written in the file, and whether it is a literal ({@code String}) or a regex. */
    record Stage(String source, boolean literal, Pattern pattern) {
        static Stage regex(String source) {
            return new Stage(source, false, Pattern.compile(source, FLAGS));
        }

        static Stage literal(String source) {
            return new Stage(source, true, Pattern.compile(Pattern.quote(source)));
        }
    }

    private final List<Stage> splits;
    private final boolean byteLevelRegex;
    private final boolean addPrefixSpace;
    private final Pattern gpt2;

    /**
     * @param splits         Split stages, applied first
     * @param byteLevelRegex ByteLevel's {@code use_regex}: apply GPT-2's pattern after the splits
     * @param addPrefixSpace ByteLevel's {@code add_prefix_space}: a space is put before text that does not start
     *                       with one (this makes decode(encode(s)) differ from s; GPT-2 and Llama-3 leave it off)
     */
    PreTokenizer(List<Stage> splits, boolean byteLevelRegex, boolean addPrefixSpace) {
        this.splits = List.copyOf(splits);
        this.byteLevelRegex = byteLevelRegex;
        this.addPrefixSpace = addPrefixSpace;
        this.gpt2 = byteLevelRegex ? Pattern.compile(GPT2_PATTERN, FLAGS) : null;
    }

    static PreTokenizer gpt2() {
        return new PreTokenizer(List.of(), true, false);
    }

    List<Stage> splits() {
        return splits;
    }

    boolean byteLevelRegex() {
        return byteLevelRegex;
    }

    boolean addPrefixSpace() {
        return addPrefixSpace;
    }

    /** Calls {@code sink} with each piece of {@code text}, in order; empty text gives no pieces. */
    void split(String text, Consumer<String> sink) {
        if (addPrefixSpace && !text.isEmpty() && text.charAt(0) != ' ') {
            text = " " + text;
        }
        List<String> pieces = List.of(text);
        for (Stage s : splits) {
            pieces = apply(s.pattern(), pieces);
        }
        if (gpt2 == null) {
            for (String p : pieces) {
                if (!p.isEmpty()) {
                    sink.accept(p);
                }
            }
            return;
        }
        for (String p : pieces) {
            isolate(gpt2, p, sink);
        }
    }

    private static List<String> apply(Pattern pattern, List<String> pieces) {
        List<String> out = new ArrayList<>();
        for (String p : pieces) {
            isolate(pattern, p, out::add);
        }
        return out;
    }

    /** Matches and the gaps between them, in order, skipping empty ones. */
    private static void isolate(Pattern pattern, String text, Consumer<String> sink) {
        Matcher m = pattern.matcher(text);
        int at = 0;
        while (m.find()) {
            if (m.start() > at) {
                sink.accept(text.substring(at, m.start()));
            }
            if (m.end() > m.start()) {
                sink.accept(text.substring(m.start(), m.end()));
            }
            at = m.end();
        }
        if (at < text.length()) {
            sink.accept(text.substring(at));
        }
    }
}
