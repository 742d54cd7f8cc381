package org.moe4j.nativ.mpi;

import static java.lang.foreign.ValueLayout.JAVA_DOUBLE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The same checks of every collective, run by each rank of any {@link Communicator} (threads in-process, or
 * processes under mpirun). Values are integers small enough that float sums are exact, so each expected result is
 * known in closed form; a wrong offset, count or rank order gives a wrong value. Throws AssertionError on the first
 * difference, naming the call, rank and element.
 */
final class CollectiveChecks {
    private CollectiveChecks() {
    }

    static void run(Communicator c, int n) {
        int r = c.rank(), w = c.size();
        try (Arena a = Arena.ofShared()) { // shared: in-process ranks read each other's buffers
            // all-reduce, float, at an offset: element i of rank r = r*1000 + i; sum = 1000*w(w-1)/2 + w*i
            MemorySegment f = a.allocate(JAVA_FLOAT, n + 3);
            for (int i = 0; i < n + 3; i++) f.setAtIndex(JAVA_FLOAT, i, -7f);
            for (int i = 0; i < n; i++) f.setAtIndex(JAVA_FLOAT, i + 3, r * 1000 + i);
            c.allReduceSum(f, 12, n);
            for (int i = 0; i < 3; i++) expect("allReduceSum guard", r, i, -7, f.getAtIndex(JAVA_FLOAT, i));
            for (int i = 0; i < n; i++)
                expect("allReduceSum", r, i, 1000.0 * w * (w - 1) / 2 + (double) w * i, f.getAtIndex(JAVA_FLOAT, i + 3));
            MemorySegment dd = a.allocate(JAVA_DOUBLE, n);
            for (int i = 0; i < n; i++) dd.setAtIndex(JAVA_DOUBLE, i, (r + 1) * 0.5 + i);
            c.allReduceSumDouble(dd, 0, n);
            for (int i = 0; i < n; i++) expect("allReduceSumDouble", r, i, 0.5 * w * (w + 1) / 2 + (double) w * i, dd.getAtIndex(JAVA_DOUBLE, i));

            // all-gather: rank r contributes n ints r*n + i; recv holds them in rank order
            MemorySegment s = a.allocate(JAVA_INT, n), g = a.allocate(JAVA_INT, (long) n * w);
            for (int i = 0; i < n; i++) s.setAtIndex(JAVA_INT, i, r * n + i);
            c.allGather(s, 0, 4L * n, g, 0);
            for (int i = 0; i < n * w; i++) expect("allGather", r, i, i, g.getAtIndex(JAVA_INT, i));

            // all-to-all-v: rank r sends (r + p + 1) ints to rank p, valued 10000*r + 100*p + j
            int[] sc = new int[w], sd = new int[w], rc = new int[w], rd = new int[w];
            int sTot = 0, rTot = 0;
            for (int p = 0; p < w; p++) {
                sc[p] = 4 * (r + p + 1);
                sd[p] = sTot;
                sTot += sc[p];
                rc[p] = 4 * (p + r + 1);
                rd[p] = rTot;
                rTot += rc[p];
            }
            MemorySegment send = a.allocate(sTot), recv = a.allocate(rTot);
            for (int p = 0; p < w; p++)
                for (int j = 0; j < sc[p] / 4; j++) send.set(JAVA_INT, sd[p] + 4L * j, 10000 * r + 100 * p + j);
            c.allToAllV(send, sc, sd, recv, rc, rd);
            for (int p = 0; p < w; p++)
                for (int j = 0; j < rc[p] / 4; j++)
                    expect("allToAllV from " + p, r, j, 10000 * p + 100 * r + j, recv.get(JAVA_INT, rd[p] + 4L * j));

            // broadcast from the last rank, at an offset
            MemorySegment b = a.allocate(JAVA_INT, n + 1);
            for (int i = 0; i <= n; i++) b.setAtIndex(JAVA_INT, i, r == w - 1 ? 5 * i + 1 : -1);
            c.broadcast(b, 4, 4L * n, w - 1);
            for (int i = 1; i <= n; i++) expect("broadcast", r, i, 5 * i + 1, b.getAtIndex(JAVA_INT, i));
            expect("broadcast guard", r, 0, r == w - 1 ? 1 : -1, b.getAtIndex(JAVA_INT, 0));
            c.barrier();
        }
    }

    /**
     * Splits by parity of the rank, ranked in reverse (key -rank): each half has ceil/floor(w/2) ranks, this rank's
     * place counts the same-parity ranks above it, and an all-reduce and an all-to-all-v inside a half see only it;
     * then the world still works. Closes the halves.
     */
    static void split(Communicator c) {
        int r = c.rank(), w = c.size();
        Communicator half = c.split(r % 2, -r);
        try (Arena a = Arena.ofShared()) {
            int size = (w + 1 - r % 2) / 2, place = 0;
            for (int q = r + 2; q < w; q += 2) place++;
            expect("split size", r, 0, size, half.size());
            expect("split rank", r, 0, place, half.rank());
            MemorySegment f = a.allocate(JAVA_FLOAT, 2);
            f.setAtIndex(JAVA_FLOAT, 0, r);
            f.setAtIndex(JAVA_FLOAT, 1, 1);
            half.allReduceSum(f, 0, 2);
            double sum = 0;
            for (int q = r % 2; q < w; q += 2) sum += q;
            expect("split allReduceSum", r, 0, sum, f.getAtIndex(JAVA_FLOAT, 0));
            expect("split allReduceSum", r, 1, size, f.getAtIndex(JAVA_FLOAT, 1));
            // all-to-all-v inside the half: one int to each member, valued 100*world rank + its place
            int[] sc = new int[size], sd = new int[size], rc = new int[size], rd = new int[size];
            MemorySegment send = a.allocate(JAVA_INT, size), recv = a.allocate(JAVA_INT, size);
            for (int p = 0; p < size; p++) {
                sc[p] = rc[p] = 4;
                sd[p] = rd[p] = 4 * p;
                send.setAtIndex(JAVA_INT, p, 100 * r + p);
            }
            half.allToAllV(send, sc, sd, recv, rc, rd);
            for (int p = 0; p < size; p++) {
                int from = w - 1 - ((w - 1 - r % 2) % 2) - 2 * p; // the half's place p: its p-th highest rank
                expect("split allToAllV from place " + p, r, p, 100 * from + place, recv.getAtIndex(JAVA_INT, p));
            }
            half.barrier();
        } finally {
            half.close();
        }
        c.barrier();
    }

    private static void expect(String what, int rank, int i, double want, double got) {
        if (want != got) throw new AssertionError(what + ": rank " + rank + ", element " + i + ": expected " + want + ", got " + got);
    }
}
