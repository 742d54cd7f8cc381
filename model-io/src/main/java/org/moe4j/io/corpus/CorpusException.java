package org.moe4j.io.corpus;

import org.moe4j.Moe4jException;

/** A corpus that cannot be read, or a token shard that cannot be read or written; the message names the file. */
public class CorpusException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public CorpusException(String message) {
        super(message);
    }

    public CorpusException(String message, Throwable cause) {
        super(message, cause);
    }
}
