package org.moe4j.nativ.mpi;

import org.moe4j.Moe4jException;

/** A collective failed: the message names the call (e.g. {@code MPI_Allreduce}), the rank and the cause. */
public class CommunicationException extends Moe4jException {
    private static final long serialVersionUID = 1L;

    public CommunicationException(String message) {
        super(message);
    }

    public CommunicationException(String message, Throwable cause) {
        super(message, cause);
    }
}
