/**
 * Collectives for distributed training: the {@link org.moe4j.nativ.mpi.Communicator} interface, Open MPI bound
 * through FFM ({@link org.moe4j.nativ.mpi.Mpi}, {@code libmpi.so.40}) and an in-process implementation over threads
 * ({@link org.moe4j.nativ.mpi.InProcessCommunicator}) for tests and machines without MPI.
 */
package org.moe4j.nativ.mpi;
