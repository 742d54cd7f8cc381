package org.moe4j.io.tokenizer;

import java.util.Arrays;

/**
 * GPT-2's byte-level alphabet ({@code bytes_to_unicode}): each of the 256 byte values is shown as one printable
 * character, so every token of a byte-level BPE is a plain string. Printable Latin-1 bytes ({@code !..~},
 * {@code ¡..¬}, {@code ®..ÿ}) stand for themselves; the other 68 bytes, in increasing order, become
 * U+0100, U+0101, ... (so a space is {@code Ġ} = U+0120 and a newline {@code Ċ} = U+010A).
 */
final class ByteLevel {
    private static final char[] BYTE_TO_CHAR = new char[256];
    /** Indexed by char; -1 where the char is not in the alphabet. Every alphabet char is below U+0144. */
    private static final int[] CHAR_TO_BYTE = new int[0x144];

    static {
        Arrays.fill(CHAR_TO_BYTE, -1);
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char c = printable ? (char) b : (char) (256 + n++);
            BYTE_TO_CHAR[b] = c;
            CHAR_TO_BYTE[c] = b;
        }
    }

    private ByteLevel() {
    }

    static char charOf(int b) {
        return BYTE_TO_CHAR[b & 0xFF];
    }

    /** The byte a char of the alphabet stands for, or -1 when it is not one. */
    static int byteOf(char c) {
        return c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    }

    /** The byte-level spelling of some bytes: one alphabet char per byte. */
    static String encode(byte[] bytes) {
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            out[i] = BYTE_TO_CHAR[bytes[i] & 0xFF];
        }
        return new String(out);
    }

    /** The bytes a byte-level token spells, or null when a char of it is outside the alphabet. */
    static byte[] decode(String token) {
        byte[] out = new byte[token.length()];
        for (int i = 0; i < out.length; i++) {
            int b = byteOf(token.charAt(i));
            if (b < 0) {
                return null;
            }
            out[i] = (byte) b;
        }
        return out;
    }
}
