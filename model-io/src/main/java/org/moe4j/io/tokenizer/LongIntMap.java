package org.moe4j.io.tokenizer;

import java.util.Arrays;

/**
 * An open-addressing map from a non-negative {@code long} (a token pair, {@code left << 32 | right}) to an
 * {@code int}, without boxing: the merge ranks looked up for every pair an encoder sees, and the trainer's pair
 * slots.
 */
final class LongIntMap {
    private static final long EMPTY = -1L;
    private long[] keys;
    private int[] values;
    private int size;
    private int mask;

    LongIntMap(int expected) {
        int cap = Integer.highestOneBit(Math.max(4, expected * 2 - 1)) << 1;
        keys = new long[cap];
        Arrays.fill(keys, EMPTY);
        values = new int[cap];
        mask = cap - 1;
    }

    static long pair(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    int size() {
        return size;
    }

    private int slot(long key) {
        int i = (int) ((key * 0x9E3779B97F4A7C15L) >>> 32) & mask;
        while (keys[i] != EMPTY && keys[i] != key) {
            i = (i + 1) & mask;
        }
        return i;
    }

    int get(long key, int absent) {
        int i = slot(key);
        return keys[i] == EMPTY ? absent : values[i];
    }

    /** Stores the value unless the key is present; returns the value the key maps to afterwards. */
    int putIfAbsent(long key, int value) {
        int i = slot(key);
        if (keys[i] != EMPTY) {
            return values[i];
        }
        keys[i] = key;
        values[i] = value;
        if (++size * 2 > keys.length) {
            grow();
        }
        return value;
    }

    /** Stores the value, replacing any the key had. */
    void put(long key, int value) {
        int i = slot(key);
        values[i] = value;
        if (keys[i] == EMPTY) {
            keys[i] = key;
            if (++size * 2 > keys.length) {
                grow();
            }
        }
    }

    private void grow() {
        long[] oldKeys = keys;
        int[] oldValues = values;
        keys = new long[oldKeys.length * 2];
        Arrays.fill(keys, EMPTY);
        values = new int[keys.length];
        mask = keys.length - 1;
        for (int j = 0; j < oldKeys.length; j++) {
            if (oldKeys[j] != EMPTY) {
                int i = slot(oldKeys[j]);
                keys[i] = oldKeys[j];
                values[i] = oldValues[j];
            }
        }
    }
}
