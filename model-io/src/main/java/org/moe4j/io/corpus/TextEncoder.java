package org.moe4j.io.corpus;

/**
 * What shard writing needs of a tokenizer. The BPE tokenizer is adapted to this; tests use {@link ByteEncoder}.
 */
public interface TextEncoder {
    /**
     * Token ids of {@code text}, without any special token; each id is in {@code [0, vocabSize())}. Called from
     * several threads at once.
     */
    int[] encode(String text);

    /** The end-of-sequence id; shards put it in front of every document (it opens the document). */
    int eosId();

    int vocabSize();

    /** What tokenizer this is, for manifest.json (a file and its checksum, or a name). */
    default String reference() {
        return getClass().getSimpleName();
    }
}
