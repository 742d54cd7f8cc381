package org.moe4j.engine.model;

import org.moe4j.Moe4jException;

/** A loss or gradient became NaN or infinite; the message names the layer and tensor where it first appeared. */
public final class NonFiniteException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public NonFiniteException(String message) {
        super(message);
    }
}
