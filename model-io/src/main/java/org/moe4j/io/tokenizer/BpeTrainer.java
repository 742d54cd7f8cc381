package org.moe4j.io.tokenizer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.function.IntConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.moe4j.Moe4jException;

/**
 * Byte-level BPE training with incremental pair counts (the algorithm of Hugging Face's {@code BpeTrainer}).
 *
 * <p>The text is read once into distinct pre-token words with their counts. Each pair of adjacent symbols has a
 * count (summed over the words it occurs in, times their counts) and an index of the words it occurs in. A merge
 * rewrites only the words in its pair's index, and changes only the counts of the pairs next to each occurrence.
 * A max-heap orders pairs by (count desc, left id asc, right id asc); entries whose count went down
 * since they were pushed are fixed lazily when they reach the top, and pairs whose count went up (only pairs
 * holding the new token can) are pushed again. Cost per merge is proportional to the words that hold the pair.
 */
final class BpeTrainer {
    private static final String SOURCE = "trained tokenizer";

    /** A heap entry: a pair and its count when pushed. */
    private record Candidate(long count, int left, int right) {
    }

    // distinct words: symbols (ids), live length, count in the text
    private int[][] wordSymbols;
    private int[] wordLength;
    private int[] wordCount;

    // pairs: slot by key; per slot its count and the words it was seen in (may hold words that lost it)
    private final LongIntMap pairSlots = new LongIntMap(1 << 16);
    private long[] pairKeys = new long[1 << 16];
    private long[] pairCount = new long[1 << 16];
    private int[][] pairWords = new int[1 << 16][];
    private int[] pairWordsLength = new int[1 << 16];
    // pairs whose count went up in the current merge (each once)
    private boolean[] grownMark = new boolean[1 << 16];
    private int[] grown = new int[1024];
    private int grownLength;

    private BpeTrainer() {
    }

    static BpeTokenizer train(Iterable<String> texts, int vocabSize, List<String> specialTokens,
            IntConsumer progress) {
        if (texts == null) {
            throw new Moe4jException(SOURCE + ": texts is null");
        }
        // vocabulary: specials, then the 256 byte tokens in char order (as Hugging Face's trainer lays it out)
        List<String> idToToken = new ArrayList<>();
        Map<String, Integer> tokenToId = new HashMap<>();
        List<BpeTokenizer.AddedToken> added = new ArrayList<>();
        for (String s : specialTokens) {
            if (s == null || s.isEmpty()) {
                throw new Moe4jException(SOURCE + ": special token " + added.size() + " is empty");
            }
            if (tokenToId.putIfAbsent(s, idToToken.size()) != null) {
                throw new Moe4jException(SOURCE + ": special token '" + s + "' is listed twice");
            }
            added.add(new BpeTokenizer.AddedToken(idToToken.size(), s, true));
            idToToken.add(s);
        }
        char[] alphabet = new char[256];
        for (int b = 0; b < 256; b++) {
            alphabet[b] = ByteLevel.charOf(b);
        }
        Arrays.sort(alphabet);
        for (char c : alphabet) {
            String t = String.valueOf(c);
            if (tokenToId.putIfAbsent(t, idToToken.size()) != null) {
                throw new Moe4jException(SOURCE + ": special token '" + t + "' is also a byte-level token");
            }
            idToToken.add(t);
        }
        if (vocabSize < idToToken.size()) {
            throw new Moe4jException(SOURCE + ": vocabSize = " + vocabSize + " must be at least 256 byte tokens + "
                    + specialTokens.size() + " special tokens = " + idToToken.size());
        }
        int[] byteIds = new int[256];
        for (int b = 0; b < 256; b++) {
            byteIds[b] = tokenToId.get(String.valueOf(ByteLevel.charOf(b)));
        }

        BpeTrainer t = new BpeTrainer();
        t.readWords(texts, specialTokens, byteIds);
        List<BpeTokenizer.Merge> merges = t.merge(vocabSize, idToToken, tokenToId, progress);

        Map<String, Integer> vocab = new LinkedHashMap<>();
        for (int id = 0; id < idToToken.size(); id++) {
            vocab.put(idToToken.get(id), id);
        }
        return new BpeTokenizer(SOURCE, vocab, merges, added, PreTokenizer.gpt2(), false, null, null);
    }

    /** Counts distinct pre-token words (special tokens are cut out first and never counted). */
    private void readWords(Iterable<String> texts, List<String> specialTokens, int[] byteIds) {
        Pattern specials = null;
        if (!specialTokens.isEmpty()) {
            List<String> sorted = new ArrayList<>(specialTokens);
            sorted.sort((a, b) -> b.length() - a.length());
            specials = Pattern.compile(String.join("|", sorted.stream().map(Pattern::quote).toList()));
        }
        PreTokenizer pre = PreTokenizer.gpt2();
        Map<String, int[]> counts = new HashMap<>();
        for (String text : texts) {
            if (text == null) {
                throw new Moe4jException(SOURCE + ": a text is null");
            }
            List<String> parts = new ArrayList<>();
            if (specials == null) {
                parts.add(text);
            } else {
                Matcher m = specials.matcher(text);
                int at = 0;
                while (m.find()) {
                    parts.add(text.substring(at, m.start()));
                    at = m.end();
                }
                parts.add(text.substring(at));
            }
            for (String part : parts) {
                pre.split(part, w -> counts.computeIfAbsent(w, k -> new int[1])[0]++);
            }
        }
        int n = counts.size();
        wordSymbols = new int[n][];
        wordLength = new int[n];
        wordCount = new int[n];
        int w = 0;
        for (var e : counts.entrySet()) {
            byte[] bytes = e.getKey().getBytes(StandardCharsets.UTF_8);
            int[] sym = new int[bytes.length];
            for (int i = 0; i < bytes.length; i++) {
                sym[i] = byteIds[bytes[i] & 0xFF];
            }
            wordSymbols[w] = sym;
            wordLength[w] = sym.length;
            wordCount[w] = e.getValue()[0];
            w++;
        }
    }

    private List<BpeTokenizer.Merge> merge(int vocabSize, List<String> idToToken, Map<String, Integer> tokenToId,
            IntConsumer progress) {
        PriorityQueue<Candidate> heap = new PriorityQueue<>((x, y) -> {
            int c = Long.compare(y.count(), x.count());
            if (c != 0) {
                return c;
            }
            c = Integer.compare(x.left(), y.left());
            return c != 0 ? c : Integer.compare(x.right(), y.right());
        });
        for (int w = 0; w < wordSymbols.length; w++) {
            int[] sym = wordSymbols[w];
            for (int j = 0; j + 1 < wordLength[w]; j++) {
                count(LongIntMap.pair(sym[j], sym[j + 1]), wordCount[w], w);
            }
        }
        for (int s = 0; s < pairSlots.size(); s++) {
            if (pairCount[s] > 0) {
                heap.add(candidate(s));
            }
        }
        List<BpeTokenizer.Merge> merges = new ArrayList<>();
        int[] seen = new int[wordSymbols.length];
        int stamp = 0;
        grownLength = 0;
        while (idToToken.size() < vocabSize && !heap.isEmpty()) {
            Candidate top = heap.poll();
            int slot = pairSlots.get(LongIntMap.pair(top.left(), top.right()), -1);
            long now = pairCount[slot];
            if (now != top.count()) {
                if (now > 0) {
                    heap.add(new Candidate(now, top.left(), top.right()));
                }
                continue;
            }
            String left = idToToken.get(top.left());
            String right = idToToken.get(top.right());
            String joined = left + right;
            Integer existing = tokenToId.get(joined);
            int id;
            if (existing != null) {
                id = existing; // another pair spelled this token already: reuse its id, as Hugging Face does
            } else {
                id = idToToken.size();
                idToToken.add(joined);
                tokenToId.put(joined, id);
            }
            merges.add(new BpeTokenizer.Merge(left, right));

            stamp++;
            int[] words = pairWords[slot];
            int nWords = pairWordsLength[slot];
            for (int i = 0; i < nWords; i++) {
                int w = words[i];
                if (seen[w] != stamp) {
                    seen[w] = stamp;
                    mergeWord(w, top.left(), top.right(), id);
                }
            }
            pairCount[slot] = 0; // merged everywhere; a merge never makes a new (left, right) neighbour
            pairWords[slot] = null;
            pairWordsLength[slot] = 0;
            for (int g = 0; g < grownLength; g++) {
                int s = grown[g];
                grownMark[s] = false;
                if (pairCount[s] > 0) {
                    heap.add(candidate(s));
                }
            }
            grownLength = 0;
            if (progress != null) {
                progress.accept(idToToken.size());
            }
        }
        return merges;
    }

    private Candidate candidate(int slot) {
        long key = pairKeys[slot];
        return new Candidate(pairCount[slot], (int) (key >>> 32), (int) key);
    }

    /**
     * Replaces every occurrence of (a, b) in word w, left to right, by id, and moves the word's count from the
     * pairs around each occurrence to the new ones (Hugging Face's {@code Word::merge}): with x before and y
     * after, (x, a) and (b, y) lose it, (x, id) and (id, y) gain it. x is read from the rewritten word, so
     * back-to-back occurrences cancel correctly ("a b a b": (id, a) is gained, then lost; (id, id) gained).
     */
    private void mergeWord(int w, int a, int b, int id) {
        int[] sym = wordSymbols[w];
        int n = wordLength[w];
        long c = wordCount[w];
        int out = 0;
        for (int j = 0; j < n; ) {
            if (j + 1 < n && sym[j] == a && sym[j + 1] == b) {
                if (out > 0) {
                    count(LongIntMap.pair(sym[out - 1], a), -c, -1);
                    grew(count(LongIntMap.pair(sym[out - 1], id), c, w));
                }
                if (j + 2 < n) {
                    count(LongIntMap.pair(b, sym[j + 2]), -c, -1);
                    grew(count(LongIntMap.pair(id, sym[j + 2]), c, w));
                }
                sym[out++] = id; // out <= j: writes never overtake the reads
                j += 2;
            } else {
                sym[out++] = sym[j++];
            }
        }
        wordLength[w] = out;
    }

    /** Adds {@code delta} to a pair's count, indexing word w under it when w >= 0; returns the pair's slot. */
    private int count(long key, long delta, int w) {
        int slot = pairSlots.putIfAbsent(key, pairSlots.size());
        if (slot == pairCount.length) {
            int cap = slot * 2;
            pairCount = Arrays.copyOf(pairCount, cap);
            pairKeys = Arrays.copyOf(pairKeys, cap);
            pairWords = Arrays.copyOf(pairWords, cap);
            pairWordsLength = Arrays.copyOf(pairWordsLength, cap);
            grownMark = Arrays.copyOf(grownMark, cap);
        }
        pairKeys[slot] = key;
        pairCount[slot] += delta;
        if (w >= 0) {
            index(slot, w);
        }
        return slot;
    }

    /** Remembers a pair whose count went up during this merge, to push it on the heap afterwards. */
    private void grew(int slot) {
        if (!grownMark[slot]) {
            grownMark[slot] = true;
            if (grownLength == grown.length) {
                grown = Arrays.copyOf(grown, grownLength * 2);
            }
            grown[grownLength++] = slot;
        }
    }

    private void index(int slot, int w) {
        int[] list = pairWords[slot];
        int n = pairWordsLength[slot];
        if (n > 0 && list[n - 1] == w) {
            return; // a word's occurrences of a pair are indexed together, so a repeat is the last entry
        }
        if (list == null) {
            list = new int[2];
        } else if (n == list.length) {
            list = Arrays.copyOf(list, n * 2);
        }
        list[n] = w;
        pairWords[slot] = list;
        pairWordsLength[slot] = n + 1;
    }
}
