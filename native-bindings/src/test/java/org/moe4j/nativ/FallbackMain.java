package org.moe4j.nativ;

import org.moe4j.simd.WorkerPool;

/** A fresh JVM for OneDnnFallbackTest: prints whether oneDNN loaded and which backend auto picks. */
public final class FallbackMain {
    private FallbackMain() {
    }

    public static void main(String[] args) {
        try (WorkerPool pool = new WorkerPool(1)) {
            System.out.println("available=" + OneDnn.available());
            System.out.println("reason=" + OneDnn.reason());
            System.out.println("auto=" + GemmBackends.select("auto", pool).gemm().name());
            System.out.println("onednn=" + GemmBackends.select("onednn", pool).gemm().name());
        }
    }
}
