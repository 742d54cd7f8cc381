package org.moe4j.nativ.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The Open MPI binding end to end: {@code mpirun --oversubscribe -np 2} on loopback runs {@link MpiCheckMain}, whose
 * ranks check every collective against its definition. Skipped, saying why, where mpirun or libmpi is missing
 * ({@code .ci/run} installs Open MPI, so CI runs it).
 */
class MpiCommunicatorTest {
    @Test
    void collectivesUnderMpirun() throws Exception {
        MpiRun.assumeAvailable();
        MpiRun.Result r = MpiRun.java(2, 120, List.of(), MpiCheckMain.class.getName(), "error");
        assertEquals(0, r.exit(), r.output());
        assertTrue(r.output().contains("rank 0 of 2: collectives ok") && r.output().contains("rank 1 of 2: collectives ok"),
                r.output());
        // the bad call came back as an exception naming the call and the rank, on both ranks
        assertTrue(r.output().contains("rank 0: MPI_Allgather on rank 0: buffers must be native memory segments"), r.output());
        assertTrue(r.output().contains("rank 1: MPI_Allgather on rank 1: buffers must be native memory segments"), r.output());
    }

    @Test
    void bindingLoadsOrSaysWhy() {
        Assumptions.assumeTrue(MpiRun.mpirun() != null, "mpirun not on PATH (Open MPI is not installed)");
        assertTrue(Mpi.available(), Mpi.reason());
        assertTrue(Mpi.reason().contains("libmpi"), Mpi.reason());
    }
}
