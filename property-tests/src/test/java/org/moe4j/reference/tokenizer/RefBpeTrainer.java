package org.moe4j.reference.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The plain twin of the BPE trainer: recounts every pair of every word before each merge. Written from the
 * definition (GPT-2's byte alphabet and regex, Hugging Face's trainer layout and tie rule), sharing no code with
 * {@code org.moe4j.io.tokenizer}. Ties between equally frequent pairs go to the smaller (left id, right id).
 */
public final class RefBpeTrainer {
    private static final Pattern GPT2 = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
            Pattern.UNICODE_CHARACTER_CLASS);

    private RefBpeTrainer() {
    }

    /** GPT-2's bytes_to_unicode. */
    public static char[] byteChars() {
        char[] c = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            c[b] = printable ? (char) b : (char) (256 + n++);
        }
        return c;
    }

    /** The merges as "left right" strings, in rank order. */
    public static List<String> merges(List<String> texts, int vocabSize, List<String> specials) {
        char[] byteChar = byteChars();
        List<String> vocab = new ArrayList<>(specials);
        char[] alphabet = byteChar.clone();
        Arrays.sort(alphabet);
        for (char c : alphabet) {
            vocab.add(String.valueOf(c));
        }
        Map<String, Integer> idOf = new HashMap<>();
        for (int i = 0; i < vocab.size(); i++) {
            idOf.put(vocab.get(i), i);
        }

        Map<String, Integer> counts = new HashMap<>();
        for (String text : texts) {
            String rest = text;
            for (String s : specials) {
                rest = rest.replace(s, "\u0000SPLIT\u0000");
            }
            for (String part : rest.split("\u0000SPLIT\u0000", -1)) {
                Matcher m = GPT2.matcher(part);
                while (m.find()) {
                    counts.merge(m.group(), 1, Integer::sum);
                }
            }
        }
        List<List<Integer>> words = new ArrayList<>();
        List<Integer> wordCounts = new ArrayList<>();
        for (var e : counts.entrySet()) {
            List<Integer> w = new ArrayList<>();
            for (byte b : e.getKey().getBytes(StandardCharsets.UTF_8)) {
                w.add(idOf.get(String.valueOf(byteChar[b & 0xFF])));
            }
            words.add(w);
            wordCounts.add(e.getValue());
        }

        List<String> merges = new ArrayList<>();
        while (vocab.size() < vocabSize) {
            Map<List<Integer>, Long> pairs = new HashMap<>();
            for (int i = 0; i < words.size(); i++) {
                List<Integer> w = words.get(i);
                for (int j = 0; j + 1 < w.size(); j++) {
                    pairs.merge(List.of(w.get(j), w.get(j + 1)), (long) wordCounts.get(i), Long::sum);
                }
            }
            List<Integer> best = null;
            long bestCount = 0;
            for (var e : pairs.entrySet()) {
                List<Integer> p = e.getKey();
                long c = e.getValue();
                if (c > bestCount || (c == bestCount && best != null && (p.get(0) < best.get(0)
                        || (p.get(0).equals(best.get(0)) && p.get(1) < best.get(1))))) {
                    best = p;
                    bestCount = c;
                }
            }
            if (best == null) {
                break;
            }
            String joined = vocab.get(best.get(0)) + vocab.get(best.get(1));
            Integer id = idOf.get(joined);
            if (id == null) {
                id = vocab.size();
                vocab.add(joined);
                idOf.put(joined, id);
            }
            merges.add(vocab.get(best.get(0)) + " " + vocab.get(best.get(1)));
            for (List<Integer> w : words) {
                for (int j = 0; j + 1 < w.size(); j++) {
                    if (w.get(j).equals(best.get(0)) && w.get(j + 1).equals(best.get(1))) {
                        w.set(j, id);
                        w.remove(j + 1);
                    }
                }
            }
        }
        return merges;
    }
}
