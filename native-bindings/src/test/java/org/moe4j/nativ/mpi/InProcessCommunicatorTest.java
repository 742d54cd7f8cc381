package org.moe4j.nativ.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The in-process group against the same collective checks the MPI binding runs, with 1 to 4 ranks. */
class InProcessCommunicatorTest {
    static void onThreads(Communicator[] cs, java.util.function.Consumer<Communicator> body) throws Exception {
        AtomicReference<Throwable> fail = new AtomicReference<>();
        List<Thread> ts = new ArrayList<>();
        for (Communicator c : cs) {
            Thread t = new Thread(() -> {
                try {
                    body.accept(c);
                } catch (Throwable e) {
                    fail.compareAndSet(null, e);
                }
            });
            t.start();
            ts.add(t);
        }
        for (Thread t : ts) t.join();
        if (fail.get() instanceof Exception e) throw e;
        if (fail.get() instanceof Error e) throw e;
    }

    @Test
    void collectivesMatchTheirDefinition() throws Exception {
        for (int w = 1; w <= 4; w++) {
            InProcessCommunicator[] cs = InProcessCommunicator.group(w);
            onThreads(cs, c -> {
                CollectiveChecks.run(c, 257);
                CollectiveChecks.run(c, 1);
                CollectiveChecks.split(c);
                CollectiveChecks.split(c); // a second split gets new groups
                c.close();
            });
        }
    }

    /** An abort on the whole group releases a rank waiting in a group split from it (MPI_Abort ends the job). */
    @Test
    void abortReachesTheSplitGroups() throws Exception {
        InProcessCommunicator[] cs = InProcessCommunicator.group(3);
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        onThreads(cs, c -> {
            Communicator sub = c.split(c.rank() < 2 ? 0 : 1, 0);
            try {
                if (c.rank() == 1) c.abort("rank one failed", 2);
                sub.barrier(); // rank 0 waits here for rank 1, which aborted instead
                seen.add("rank " + c.rank() + " passed");
            } catch (CommunicationException e) {
                seen.add(e.getMessage());
            }
        });
        assertEquals(3, seen.size(), seen.toString());
        assertTrue(seen.stream().anyMatch(x -> x.contains("stopped the job: rank one failed")), seen.toString());
        assertTrue(seen.stream().noneMatch(x -> x.startsWith("rank 0 passed")), seen.toString());
    }

    @Test
    void abortReleasesTheOtherRanksWithTheReason() throws Exception {
        InProcessCommunicator[] cs = InProcessCommunicator.group(3);
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        onThreads(cs, c -> {
            try {
                if (c.rank() == 1) c.abort("weights differ", 2);
                c.barrier();
                seen.add("rank " + c.rank() + " passed");
            } catch (CommunicationException e) {
                seen.add(e.getMessage());
            }
        });
        assertEquals(3, seen.size(), seen.toString());
        for (String s : seen) assertTrue(s.contains("rank 1 of 3 stopped the job: weights differ"), seen.toString());
    }

    @Test
    void mismatchedAllToAllCountsAreNamed() throws Exception {
        InProcessCommunicator[] cs = InProcessCommunicator.group(2);
        List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        onThreads(cs, c -> {
            var seg = java.lang.foreign.Arena.ofAuto().allocate(64);
            try {
                c.allToAllV(seg, new int[] {4, 4}, new int[] {0, 4}, seg, new int[] {4, c.rank() == 0 ? 8 : 4},
                        new int[] {16, 24});
            } catch (CommunicationException e) {
                seen.add(e.getMessage());
            }
        });
        // rank 0 names the mismatch; rank 1, waiting in the same call, is released with the same reason
        assertEquals(2, seen.size(), seen.toString());
        for (String s : seen) assertTrue(s.endsWith("allToAllV on rank 0: rank 1 sends 4 bytes, this rank expects 8"), seen.toString());
    }

    @Test
    void badArgumentsThrow() {
        Communicator c = InProcessCommunicator.single();
        var seg = java.lang.foreign.Arena.ofAuto().allocate(16);
        assertThrows(CommunicationException.class, () -> c.allReduceSum(seg, 8, 4));
        assertThrows(CommunicationException.class, () -> c.broadcast(seg, 0, 4, 1));
        assertThrows(CommunicationException.class, () -> InProcessCommunicator.group(0));
    }
}
