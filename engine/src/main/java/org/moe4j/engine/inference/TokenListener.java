package org.moe4j.engine.inference;

/** Receives a session's tokens as they are generated, on the thread that steps the {@link Generator}. */
public interface TokenListener {
    /** A new token and the text it added (empty while a multi-byte character is incomplete, or without a tokenizer). */
    void onToken(GenerationSession session, int tokenId, String textDelta);

    /** The session finished ({@link GenerationSession#finishReason()}). */
    default void onDone(GenerationSession session) {
    }

    TokenListener NONE = (s, id, t) -> { };
}
