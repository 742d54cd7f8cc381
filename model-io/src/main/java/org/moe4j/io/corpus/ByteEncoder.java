package org.moe4j.io.corpus;

import java.nio.charset.StandardCharsets;

/** The trivial tokenizer: one token per UTF-8 byte (ids 0..255), EOS = 256, vocabulary 257. */
public final class ByteEncoder implements TextEncoder {
    public static final int EOS = 256;
    public static final int VOCAB = 257;

    @Override
    public int[] encode(String text) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[b.length];
        for (int i = 0; i < b.length; i++) {
            ids[i] = b[i] & 0xFF;
        }
        return ids;
    }

    @Override
    public int eosId() {
        return EOS;
    }

    @Override
    public int vocabSize() {
        return VOCAB;
    }

    @Override
    public String reference() {
        return "byte-level (UTF-8 bytes 0..255, EOS 256)";
    }
}
