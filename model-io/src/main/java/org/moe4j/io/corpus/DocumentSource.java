package org.moe4j.io.corpus;

import java.util.stream.Stream;

/**
 * A corpus: a deterministic sequence of documents. Every call to {@link #documents()} reads the corpus again from
 * the start, in the same order (a tokenizer is trained on one pass and the shards are written on another).
 */
public interface DocumentSource {
    /** Short name, as given on the command line: {@code jdk}, {@code brown}, {@code folder:/data/x}. */
    String name();

    /** What exactly was read, for manifest.json: package and version, file, checksum. */
    String reference();

    /** The documents, in a fixed order. Close the stream to release the files it reads. */
    Stream<Document> documents();

    /** About how many documents {@link #documents()} yields, for a progress bar; -1 when unknown. */
    default long documentCountHint() {
        return -1;
    }
}
