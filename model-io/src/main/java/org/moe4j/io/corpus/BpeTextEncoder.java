package org.moe4j.io.corpus;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import org.moe4j.io.tokenizer.BpeTokenizer;

/**
 * A byte-level BPE tokenizer as the shard writer's {@link TextEncoder}. {@link BpeTokenizer} is immutable and its
 * piece cache is a concurrent map, so one instance serves the writer's parallel batches.
 *
 * <p>Shards keep EOS for document starts only, but {@link BpeTokenizer#encode} turns an added token's text (such as
 * {@code <|endoftext|>}) into its id wherever it appears. A document that holds such text literally gets it as
 * ordinary bytes instead: the text is cut after the added token's first code point and both sides are encoded
 * separately, so it decodes to the same characters and no special id enters the shard (added tokens of one character are
 * left to the tokenizer).
 */
public final class BpeTextEncoder implements TextEncoder {
    private final BpeTokenizer tokenizer;
    private final String reference;
    private final int eosId;

    /** @param reference what goes into manifest.json: the tokenizer.json and its checksum */
    public BpeTextEncoder(BpeTokenizer tokenizer, String reference) {
        this.tokenizer = tokenizer;
        this.reference = reference;
        this.eosId = tokenizer.eosId();
    }

    /** A tokenizer and a reference naming its file and the file's SHA-256. */
    public static BpeTextEncoder of(BpeTokenizer tokenizer, Path tokenizerJson) {
        return new BpeTextEncoder(tokenizer, tokenizerJson.getFileName() + " sha256:" + sha256(tokenizerJson));
    }

    public BpeTokenizer tokenizer() {
        return tokenizer;
    }

    @Override
    public int[] encode(String text) {
        int cut = specialCut(text);
        if (cut < 0) {
            return tokenizer.encode(text);
        }
        int[] a = encode(text.substring(0, cut));
        int[] b = encode(text.substring(cut));
        int[] ids = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, ids, a.length, b.length);
        return ids;
    }

    /** Index just after the first code point of the earliest added token's text in {@code text}, or -1. */
    private int specialCut(String text) {
        int best = -1;
        for (BpeTokenizer.AddedToken t : tokenizer.addedTokens()) {
            if (t.content().codePointCount(0, t.content().length()) < 2) {
                continue; // cannot be cut; one-character added tokens are not EOS names
            }
            int at = text.indexOf(t.content());
            if (at >= 0) {
                int cut = at + Character.charCount(text.codePointAt(at));
                best = best < 0 ? cut : Math.min(best, cut);
            }
        }
        return best;
    }

    @Override
    public int eosId() {
        return eosId;
    }

    @Override
    public int vocabSize() {
        return tokenizer.vocabSize();
    }

    @Override
    public String reference() {
        return reference;
    }

    /** Hex SHA-256 of a file. */
    public static String sha256(Path file) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            return HexFormat.of().formatHex(md.digest(Files.readAllBytes(file)));
        } catch (IOException e) {
            throw new CorpusException(file + ": cannot read the tokenizer to checksum it: " + e, e);
        } catch (NoSuchAlgorithmException e) {
            throw new CorpusException(file + ": cannot checksum: this JDK has no SHA-256 (every JDK must)", e);
        }
    }
}
