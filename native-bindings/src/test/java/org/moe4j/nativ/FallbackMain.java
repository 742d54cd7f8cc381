package org.moe4j.nativ;

import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.moe4j.simd.WorkerPool;

/**
 * A fresh JVM for OneDnnFallbackTest: prints whether oneDNN loaded and which backend auto picks, and every record
 * this module logs as {@code record=LEVEL|message} with line breaks shown as {@code \n}, so the test can count them.
 */
public final class FallbackMain {
    /** Held here: the log manager keeps loggers only weakly, and a collected one would lose the handler. */
    private static final Logger NATIVE = Logger.getLogger("org.moe4j.nativ");

    private FallbackMain() {
    }

    public static void main(String[] args) {
        NATIVE.setUseParentHandlers(false);
        NATIVE.addHandler(new Handler() {
            @Override
            public void publish(LogRecord r) {
                System.out.println("record=" + r.getLevel() + "|" + r.getMessage().replace("\n", "\\n"));
            }

            @Override
            public void flush() {
            }

            @Override
            public void close() {
            }
        });
        try (WorkerPool pool = new WorkerPool(1)) {
            System.out.println("available=" + OneDnn.available());
            System.out.println("reason=" + OneDnn.reason());
            System.out.println("auto=" + GemmBackends.select("auto", pool).gemm().name());
            System.out.println("onednn=" + GemmBackends.select("onednn", pool).gemm().name());
        }
    }
}
