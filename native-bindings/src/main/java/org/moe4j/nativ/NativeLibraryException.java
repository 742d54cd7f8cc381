package org.moe4j.nativ;

import org.moe4j.Moe4jException;

/**
 * A native library could not be found, extracted, verified or loaded. The message names the file, jar entry or
 * folder and what was expected. Callers in this module catch it, log one line and fall back to Java; it only
 * reaches a user who asked for a native backend explicitly and strictly.
 */
public class NativeLibraryException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public NativeLibraryException(String message) {
        super(message);
    }

    public NativeLibraryException(String message, Throwable cause) {
        super(message, cause);
    }
}
