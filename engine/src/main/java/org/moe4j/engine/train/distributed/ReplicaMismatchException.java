package org.moe4j.engine.train.distributed;

import org.moe4j.Moe4jException;

/** The ranks of a data-parallel run no longer hold the same weights; the message gives the step and each hash. */
public class ReplicaMismatchException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public ReplicaMismatchException(String message) {
        super(message);
    }
}
