package org.moe4j.io.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.IntConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.moe4j.Moe4jException;

/**
 * A byte-level BPE tokenizer (GPT-2 family), read from and written to Hugging Face {@code tokenizer.json}.
 *
 * <p>Encoding: added tokens (special ones such as {@code <|endoftext|>}) are matched first, as whole strings,
 * longest first; the text between them is split by the {@link PreTokenizer}, each piece is spelled as UTF-8 bytes
 * in the byte-level alphabet, and merges apply to it by rank (lowest rank first, leftmost first, as Hugging Face
 * {@code tokenizers} does). Nothing is added around the text: no BOS/EOS, whatever the file's
 * {@code post_processor} says; callers add {@link #eosId()} where they want it.
 *
 * <p>Round trip: {@code decode(encode(s)).equals(s)} for every string that is valid UTF-16, i.e. has no unpaired
 * surrogate. An unpaired surrogate has no UTF-8 form; the JDK's encoder writes {@code '?'} for it, so such a
 * string comes back with {@code '?'} in its place. (Also false when a loaded file sets
 * {@code add_prefix_space}, which inserts a space.)
 *
 * <p>Instances are immutable and safe to share between threads; encoding keeps a bounded cache of pieces.
 */
public final class BpeTokenizer {
    /** GPT-2's end-of-text token, the default special token of {@link #train}. */
    public static final String END_OF_TEXT = "<|endoftext|>";
    /** Names an EOS token can have, in the order {@link #eosId()} looks for them. */
    private static final List<String> EOS_NAMES = List.of(END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>");
    private static final int CACHE_ENTRIES = 1 << 16;
    private static final int CACHE_MAX_PIECE = 128;

    /** A token outside the BPE model, matched in text as a whole string; {@code special} as in the file. */
    public record AddedToken(int id, String content, boolean special) {
    }

    /** One merge rule, both sides in the byte-level alphabet; its rank is its index in {@link #merges()}. */
    public record Merge(String left, String right) {
    }

    private final String source;
    /** id -> the token's text: the byte-level spelling for BPE tokens, the content for added tokens; null = gap. */
    private final String[] tokens;
    /** id -> its bytes for BPE tokens; null for added tokens, which decode to their content. */
    private final byte[][] tokenBytes;
    private final boolean[] isAdded;
    private final Map<String, Integer> vocab;
    private final List<Merge> merges;
    private final List<AddedToken> added;
    private final Map<String, Integer> addedIds;
    private final Pattern addedPattern;
    private final int[] byteIds = new int[256];
    private final int[] mergeResult;
    private final LongIntMap ranks;
    private final PreTokenizer preTokenizer;
    private final boolean ignoreMerges;
    private final int unkId;
    private final int eosId;
    private final JsonNode postProcessor;
    private final Map<String, int[]> cache = new ConcurrentHashMap<>();

    /**
     * Checks and indexes a model; {@code source} names the file (or "trained tokenizer") in messages, which name
     * the tokenizer.json fields.
     */
    BpeTokenizer(String source, Map<String, Integer> vocab, List<Merge> merges, List<AddedToken> added,
            PreTokenizer preTokenizer, boolean ignoreMerges, String unkToken, JsonNode postProcessor) {
        this.source = source;
        this.vocab = new LinkedHashMap<>(vocab);
        this.merges = List.copyOf(merges);
        this.added = List.copyOf(added);
        this.preTokenizer = preTokenizer;
        this.ignoreMerges = ignoreMerges;
        this.postProcessor = postProcessor;

        int size = 0;
        for (var e : vocab.entrySet()) {
            if (e.getValue() < 0) {
                throw error("model.vocab", "token '" + e.getKey() + "' has negative id " + e.getValue());
            }
            size = Math.max(size, e.getValue() + 1);
        }
        for (AddedToken t : added) {
            size = Math.max(size, t.id() + 1);
        }
        tokens = new String[size];
        tokenBytes = new byte[size][];
        isAdded = new boolean[size];

        addedIds = new HashMap<>();
        for (int i = 0; i < added.size(); i++) {
            AddedToken t = added.get(i);
            String field = "added_tokens[" + i + "]";
            if (t.id() < 0) {
                throw error(field + ".id", "is " + t.id() + ", expected >= 0");
            }
            if (t.content() == null || t.content().isEmpty()) {
                throw error(field + ".content", "is empty");
            }
            if (addedIds.putIfAbsent(t.content(), t.id()) != null) {
                throw error(field + ".content", "'" + t.content() + "' appears twice");
            }
            if (isAdded[t.id()]) {
                throw error(field + ".id", "id " + t.id() + " is used by two added tokens");
            }
            isAdded[t.id()] = true;
            tokens[t.id()] = t.content();
        }
        for (var e : vocab.entrySet()) {
            int id = e.getValue();
            if (isAdded[id]) {
                continue; // decodes to the added token's content
            }
            if (tokens[id] != null) {
                throw error("model.vocab", "tokens '" + tokens[id] + "' and '" + e.getKey() + "' both have id " + id);
            }
            byte[] bytes = ByteLevel.decode(e.getKey());
            if (bytes == null) {
                throw error("model.vocab", "token '" + e.getKey() + "' (id " + id
                        + ") has a character outside the byte-level alphabet (not a byte-level BPE vocabulary?)");
            }
            tokens[id] = e.getKey();
            tokenBytes[id] = bytes;
        }
        for (int b = 0; b < 256; b++) {
            byteIds[b] = vocab.getOrDefault(String.valueOf(ByteLevel.charOf(b)), -1);
        }
        unkId = unkToken == null ? -1 : vocab.getOrDefault(unkToken, -1);
        if (unkToken != null && unkId < 0) {
            throw error("model.unk_token", "'" + unkToken + "' is not in model.vocab");
        }

        int m = merges.size();
        mergeResult = new int[m];
        ranks = new LongIntMap(m);
        for (int r = 0; r < m; r++) {
            Merge mg = merges.get(r);
            String field = "model.merges[" + r + "]";
            int left = mergeSide(field, mg, mg.left());
            int right = mergeSide(field, mg, mg.right());
            mergeResult[r] = mergeSide(field, mg, mg.left() + mg.right());
            ranks.put(LongIntMap.pair(left, right), r); // a repeated rule takes its last rank, as in HF and GPT-2
        }

        List<AddedToken> longestFirst = new ArrayList<>(added);
        longestFirst.sort(Comparator.comparingInt((AddedToken t) -> -t.content().length()));
        StringBuilder alt = new StringBuilder();
        for (AddedToken t : longestFirst) {
            alt.append(alt.isEmpty() ? "" : "|").append(Pattern.quote(t.content()));
        }
        addedPattern = added.isEmpty() ? null : Pattern.compile(alt.toString());
        eosId = findEos();
    }

    private int mergeSide(String field, Merge mg, String token) {
        Integer id = vocab.get(token);
        if (id == null) {
            throw error(field, "'" + mg.left() + " " + mg.right() + "': token '" + token + "' is not in model.vocab");
        }
        return id;
    }

    private int findEos() {
        for (String name : EOS_NAMES) {
            Integer id = addedIds.get(name);
            if (id != null) {
                return id;
            }
        }
        for (AddedToken t : added) {
            if (t.special()) {
                return t.id();
            }
        }
        return -1;
    }

    private Moe4jException error(String field, String what) {
        return new Moe4jException(source + ": '" + field + "' " + what);
    }

    /**
     * Learns a byte-level BPE from {@code texts}: the vocabulary is the special tokens (ids 0..), the 256 byte
     * tokens, then one token per merge until it has {@code vocabSize} tokens (fewer when the text runs out of
     * pairs). Deterministic: ties between equally frequent pairs go to the smaller (left id, right id).
     *
     * @param specialTokens added as special tokens and never merged across; null means {@code [<|endoftext|>]}
     * @param progress      told the vocabulary size after each merge; may be null
     */
    public static BpeTokenizer train(Iterable<String> texts, int vocabSize, List<String> specialTokens,
            IntConsumer progress) {
        return BpeTrainer.train(texts, vocabSize, specialTokens == null ? List.of(END_OF_TEXT) : specialTokens,
                progress);
    }

    /** Reads a Hugging Face {@code tokenizer.json} with a byte-level BPE model. */
    public static BpeTokenizer load(Path tokenizerJson) {
        return TokenizerJson.read(tokenizerJson);
    }

    /** Writes this tokenizer as a Hugging Face {@code tokenizer.json}, atomically (temp file, then rename). */
    public void save(Path tokenizerJson) {
        TokenizerJson.write(this, tokenizerJson);
    }

    /** The token ids of {@code text}. */
    public int[] encode(String text) {
        IntBuffer out = new IntBuffer(text.length() / 3 + 4);
        if (addedPattern == null) {
            encodeOrdinary(text, out);
        } else {
            Matcher m = addedPattern.matcher(text);
            int at = 0;
            while (m.find()) {
                encodeOrdinary(text.substring(at, m.start()), out);
                out.add(addedIds.get(m.group()));
                at = m.end();
            }
            encodeOrdinary(text.substring(at), out);
        }
        return out.toArray();
    }

    private void encodeOrdinary(String text, IntBuffer out) {
        if (!text.isEmpty()) {
            preTokenizer.split(text, piece -> out.addAll(encodePiece(piece)));
        }
    }

    private int[] encodePiece(String piece) {
        int[] ids = cache.get(piece);
        if (ids == null) {
            ids = bpe(piece.getBytes(StandardCharsets.UTF_8));
            if (piece.length() <= CACHE_MAX_PIECE && cache.size() < CACHE_ENTRIES) {
                cache.put(piece, ids);
            }
        }
        return ids;
    }

    /**
     * Merges within one piece, as Hugging Face's {@code Word::merge_all} does: repeatedly the adjacent pair with the
     * lowest rank, leftmost first. A heap of (rank, position) over a linked list of symbols makes this O(n log n),
     * so a long piece (a minified line, a base64 blob) costs no more than its length suggests. For a vocabulary
     * learned by BPE this gives the same tokens as GPT-2's {@code bpe()}, which merges every occurrence of the
     * best pair per pass (a new pair always ranks after the merge that made it).
     */
    private int[] bpe(byte[] bytes) {
        if (ignoreMerges) {
            Integer whole = vocab.get(ByteLevel.encode(bytes));
            if (whole != null) {
                return new int[] {whole};
            }
        }
        int n = bytes.length;
        int[] sym = new int[n];
        for (int i = 0; i < n; i++) {
            int id = byteIds[bytes[i] & 0xFF];
            if (id < 0) {
                if (unkId < 0) {
                    throw error("model.vocab", String.format("has no token for byte 0x%02X ('%c')", bytes[i] & 0xFF,
                            ByteLevel.charOf(bytes[i])));
                }
                id = unkId;
            }
            sym[i] = id;
        }
        if (n < 2) {
            return sym;
        }
        int[] prev = new int[n];
        int[] next = new int[n];
        // heap entries: rank << 32 | position of the pair's left symbol; at most n - 1 initial + 2 per merge
        long[] heap = new long[3 * n];
        int size = 0;
        for (int i = 0; i < n; i++) {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            int r = i + 1 < n ? rank(sym[i], sym[i + 1]) : -1;
            if (r >= 0) {
                size = heapPush(heap, size, (long) r << 32 | i);
            }
        }
        int alive = n;
        while (size > 0) {
            long top = heap[0];
            size = heapPop(heap, size);
            int r = (int) (top >>> 32);
            int pos = (int) top;
            int right = next[pos];
            if (sym[pos] < 0 || right < 0 || rank(sym[pos], sym[right]) != r) {
                continue; // a symbol of this pair was merged away since it was pushed
            }
            sym[pos] = mergeResult[r];
            sym[right] = -1;
            alive--;
            next[pos] = next[right];
            if (next[pos] >= 0) {
                prev[next[pos]] = pos;
                int rr = rank(sym[pos], sym[next[pos]]);
                if (rr >= 0) {
                    size = heapPush(heap, size, (long) rr << 32 | pos);
                }
            }
            if (prev[pos] >= 0) {
                int rl = rank(sym[prev[pos]], sym[pos]);
                if (rl >= 0) {
                    size = heapPush(heap, size, (long) rl << 32 | prev[pos]);
                }
            }
        }
        int[] out = new int[alive];
        for (int i = 0, k = 0; i >= 0; i = next[i]) {
            out[k++] = sym[i];
        }
        return out;
    }

    /** The rank of merging (left, right), or -1 when no rule does. */
    private int rank(int left, int right) {
        return ranks.get(LongIntMap.pair(left, right), -1);
    }

    /** Min-heap push; returns the new size. */
    private static int heapPush(long[] heap, int size, long v) {
        int i = size;
        while (i > 0) {
            int parent = (i - 1) >>> 1;
            if (heap[parent] <= v) {
                break;
            }
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = v;
        return size + 1;
    }

    /** Removes the minimum (heap[0]); returns the new size. */
    private static int heapPop(long[] heap, int size) {
        long last = heap[--size];
        int i = 0;
        while (true) {
            int child = 2 * i + 1;
            if (child >= size) {
                break;
            }
            if (child + 1 < size && heap[child + 1] < heap[child]) {
                child++;
            }
            if (heap[child] >= last) {
                break;
            }
            heap[i] = heap[child];
            i = child;
        }
        heap[i] = last;
        return size;
    }

    /**
     * The text of {@code ids}: BPE tokens' bytes read as UTF-8 (a cut-off sequence gives U+FFFD), added tokens'
     * content as it is.
     */
    public String decode(int[] ids) {
        StringBuilder sb = new StringBuilder(ids.length * 4);
        byte[] buf = new byte[64];
        int len = 0;
        for (int id : ids) {
            checkId(id);
            if (isAdded[id]) {
                sb.append(new String(buf, 0, len, StandardCharsets.UTF_8)).append(tokens[id]);
                len = 0;
            } else {
                byte[] b = tokenBytes[id];
                if (len + b.length > buf.length) {
                    buf = Arrays.copyOf(buf, Math.max(buf.length * 2, len + b.length));
                }
                System.arraycopy(b, 0, buf, len, b.length);
                len += b.length;
            }
        }
        return sb.append(new String(buf, 0, len, StandardCharsets.UTF_8)).toString();
    }

    private void checkId(int id) {
        if (id < 0 || id >= tokens.length) {
            throw new Moe4jException(source + ": token id " + id + " is out of range [0, " + tokens.length + ")");
        }
        if (tokens[id] == null) {
            throw new Moe4jException(source + ": token id " + id + " has no token (a gap in model.vocab)");
        }
    }

    /** One more than the largest token id (BPE and added tokens together). */
    public int vocabSize() {
        return tokens.length;
    }

    /**
     * The id of a token: an added token by its content, a BPE token by its byte-level spelling (a space is
     * {@code Ġ}).
     *
     * @throws Moe4jException naming the token when there is none
     */
    public int tokenId(String token) {
        Integer id = addedIds.get(token);
        if (id == null) {
            id = vocab.get(token);
        }
        if (id == null) {
            throw new Moe4jException(source + ": no token '" + token + "' in model.vocab or added_tokens");
        }
        return id;
    }

    /** The text of one token id (byte-level spelling, or an added token's content). */
    public String token(int id) {
        checkId(id);
        return tokens[id];
    }

    /**
     * The end-of-text token: {@code <|endoftext|>}, else {@code <|end_of_text|>}, {@code </s>} or {@code <eos>}
     * among the added tokens, else the first special added token.
     *
     * @throws Moe4jException when the tokenizer has no such token
     */
    public int eosId() {
        if (eosId < 0) {
            throw new Moe4jException(source + ": no end-of-text token among added_tokens (expected '" + END_OF_TEXT
                    + "' or a special token)");
        }
        return eosId;
    }

    /** The merge rules, by rank. */
    public List<Merge> merges() {
        return merges;
    }

    /** The added tokens, in file order. */
    public List<AddedToken> addedTokens() {
        return added;
    }

    /** The BPE vocabulary (byte-level spelling -> id), in file order. */
    Map<String, Integer> vocab() {
        return vocab;
    }

    PreTokenizer preTokenizer() {
        return preTokenizer;
    }

    boolean ignoreMerges() {
        return ignoreMerges;
    }

    String unkToken() {
        return unkId < 0 ? null : tokens[unkId];
    }

    JsonNode postProcessor() {
        return postProcessor;
    }

    /** A growable int array, so encoding does not box. */
    private static final class IntBuffer {
        private int[] a;
        private int n;

        IntBuffer(int capacity) {
            a = new int[capacity];
        }

        void add(int v) {
            if (n == a.length) {
                a = Arrays.copyOf(a, a.length * 2 + 1);
            }
            a[n++] = v;
        }

        void addAll(int[] v) {
            if (n + v.length > a.length) {
                a = Arrays.copyOf(a, Math.max(a.length * 2, n + v.length));
            }
            System.arraycopy(v, 0, a, n, v.length);
            n += v.length;
        }

        int[] toArray() {
            return Arrays.copyOf(a, n);
        }
    }
}
