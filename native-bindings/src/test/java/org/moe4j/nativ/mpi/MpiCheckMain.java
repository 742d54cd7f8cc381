package org.moe4j.nativ.mpi;

/**
 * Run under mpirun by {@link MpiCommunicatorTest}: every collective's checks on the world communicator, then
 * "rank r of w: collectives ok". With argument {@code error}: a call with a bad root, which must come back as a
 * CommunicationException naming the call and the rank (not abort the job).
 */
public final class MpiCheckMain {
    private MpiCheckMain() {
    }

    public static void main(String[] args) {
        Communicator c = Mpi.world();
        try {
            CollectiveChecks.run(c, 1000);
            CollectiveChecks.run(c, 3);
            CollectiveChecks.split(c);
            System.out.println("rank " + c.rank() + " of " + c.size() + ": collectives ok");
            if (args.length > 0 && args[0].equals("error")) {
                try {
                    c.allGather(java.lang.foreign.MemorySegment.ofArray(new byte[4]), 0, 4,
                            java.lang.foreign.MemorySegment.ofArray(new byte[8]), 0);
                    System.out.println("rank " + c.rank() + ": no error");
                } catch (CommunicationException e) {
                    System.out.println("rank " + c.rank() + ": " + e.getMessage());
                }
            }
        } finally {
            c.close();
        }
    }
}
