package org.moe4j.io.corpus;

import java.nio.charset.StandardCharsets;

/** The stable hashes behind the train/validation split, the per-domain cap and window sampling. */
final class Hashing {
    private Hashing() {
    }

    /** SplitMix64's finalizer: a bijective 64-bit mix (Steele, Lea, Flood 2014). */
    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /** FNV-1a over the UTF-8 bytes of {@code s}, mixed with {@code salt}: same string, same value, on any JVM. */
    static long hash(String s, long salt) {
        long h = 0xcbf29ce484222325L;
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ (b & 0xFF)) * 0x100000001b3L;
        }
        return mix(h ^ mix(salt));
    }

    /** A uniform double in [0, 1) from a hash. */
    static double unit(long hash) {
        return (hash >>> 11) * 0x1.0p-53;
    }
}
