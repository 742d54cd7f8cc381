package org.moe4j.io.safetensors;

import org.moe4j.Moe4jException;

/** A safetensors file or checkpoint that cannot be read or written; the message names the file and the tensor. */
public class SafetensorsException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public SafetensorsException(String message) {
        super(message);
    }

    public SafetensorsException(String message, Throwable cause) {
        super(message, cause);
    }
}
