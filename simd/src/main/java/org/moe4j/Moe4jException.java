package org.moe4j;

/**
 * The root of every error moe4j reports. A message names the file, tensor, field or token that is wrong
 * and what was expected, so a person can act on it without a debugger.
 */
public class Moe4jException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public Moe4jException(String message) {
        super(message);
    }

    public Moe4jException(String message, Throwable cause) {
        super(message, cause);
    }
}
