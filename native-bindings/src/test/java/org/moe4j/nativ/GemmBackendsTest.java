package org.moe4j.nativ;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.moe4j.Moe4jException;
import org.moe4j.simd.Gemm;
import org.moe4j.simd.WorkerPool;

/** The chooser: each name gives the backend it says, or the stated fallback; unknown names are refused. */
class GemmBackendsTest {
    static final WorkerPool POOL = new WorkerPool(2);

    @AfterAll
    static void close() {
        POOL.close();
    }

    @Test
    void namesPickBackends() {
        assertEquals("java", GemmBackends.select("java", POOL).gemm().name());
        String expected = OneDnn.available() ? "onednn" : "java";
        assertEquals(expected, GemmBackends.select("auto", POOL).gemm().name());
        assertEquals(expected, GemmBackends.select(" OneDNN ", POOL).gemm().name());
        Gemm mm = GemmBackends.select("onednn_matmul", POOL).gemm();
        assertEquals(OneDnn.available() ? "onednn_matmul" : "java", mm.name());
        if (mm instanceof OneDnnMatmul m) {
            m.close();
        }
        GemmBackends.Choice cuda = GemmBackends.select("cuda", POOL);
        if (Cuda.available()) {
            assertEquals("cuda", cuda.gemm().name());
            ((CudaGemm) cuda.gemm()).close();
        } else {
            assertEquals(expected, cuda.gemm().name());
            assertTrue(cuda.reason().contains("cuda requested but unavailable"), cuda.reason());
        }
        Moe4jException e = assertThrows(Moe4jException.class, () -> GemmBackends.select("mkl", POOL));
        assertEquals("GEMM backend 'mkl' (--gemm): expected one of auto, java, onednn, onednn_matmul, cuda",
                e.getMessage());
        e = assertThrows(Moe4jException.class, () -> GemmBackends.select("mkl", "$MOE4J_GEMM", POOL));
        assertTrue(e.getMessage().startsWith("GEMM backend 'mkl' ($MOE4J_GEMM): "), e.getMessage());
    }

    @Test
    void oneDnnChoiceRunsHeapOperandsOnJava() {
        Gemm g = GemmBackends.select("onednn", POOL).gemm();
        float[] a = {1, 2, 3, 4}; // [2, 2]
        float[] b = {5, 6, 7, 8};
        float[] c = new float[4];
        g.sgemm(false, false, 2, 2, 2, 1f, MemorySegment.ofArray(a), 0, 2, MemorySegment.ofArray(b), 0, 2, 0f,
                MemorySegment.ofArray(c), 0, 2);
        assertEquals(19f, c[0]);
        assertEquals(50f, c[3]);
    }

    @Test
    void cudaReportsWhyWhenAbsent() {
        assertFalse(Cuda.reason() == null || Cuda.reason().isBlank());
        if (!Cuda.available()) {
            assertThrows(NativeLibraryException.class, CudaGemm::new);
        }
    }

    @Test
    void badArgumentsNameTheValueAndWhatWasExpected() {
        Moe4jException e = assertThrows(Moe4jException.class, () -> new OmpThreads(-1));
        assertEquals("oneDNN threads = -1: must be >= 0 (0: the OpenMP default)", e.getMessage());
        e = assertThrows(Moe4jException.class,
                () -> OneDnnGemm.requireNative(MemorySegment.ofArray(new float[1]), "GEMM operand A"));
        assertTrue(e.getMessage().startsWith("GEMM operand A is a heap segment; "), e.getMessage());
        assertThrows(Moe4jException.class, () -> GemmBackends.select("java", null));
        assertEquals("a b c", GemmBackends.oneLine("a\n  b\r\nc"));
    }
}
