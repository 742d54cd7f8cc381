package org.moe4j.engine.model;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import org.moe4j.Moe4jException;
import org.moe4j.engine.config.LossWeights;
import org.moe4j.engine.routing.Router;
import org.moe4j.engine.routing.Routing;
import org.moe4j.engine.routing.RoutingControl;
import org.moe4j.simd.Tensor;
import org.moe4j.simd.VectorOps;

/**
 * {@code y = h + Σ_{kept slots} g · W2_e (silu(W1_e u) ⊙ W3_e u)}, {@code u = RMSNorm(h)}, shared experts with
 * {@code g = 1}: one decoder layer's MoE block — the router pipeline, the counting-sort dispatch, two weight products
 * per expert over its contiguous rows, the per-token combine, and (training) ERC; forward and backward over the
 * activations it is handed (each layer its own in training, one shared by every layer for a forward-only runner).
 */
final class MoeBlock {
    /** The forward's activations and routing scratch; what the backward reads. */
    static final class Activations {
        final Tensor xn2, rstd2, rlogits, xe, a13, act, ye;
        final Router router;
        final Routing routing;
        final int[] rowOfSlot;

        Activations(BlockContext x, String p) {
            int maxN = x.maxN, slots = x.slots();
            xn2 = x.ws.allocate(p + "xn2", maxN, x.d);
            rstd2 = x.ws.allocate(p + "rstd2", maxN);
            rlogits = x.ws.allocate(p + "routerLogits", maxN, x.E);
            xe = x.ws.allocate(p + "expertIn", slots, x.d);
            a13 = x.ws.allocate(p + "expertGateUp", slots, 2 * x.hid);
            act = x.ws.allocate(p + "expertAct", slots, x.hid);
            ye = x.ws.allocate(p + "expertOut", slots, x.d);
            router = new Router(x.c, maxN, x.maxSeqs);
            routing = router.newRouting();
            rowOfSlot = new int[slots];
        }
    }

    private final BlockContext x;
    final int l;
    final Activations a;
    final long wNorm2, wr;
    final long[] w13, w2;
    final int[] keptList;
    /** Expert–router coupling (training only). */
    final ExpertRouterCoupling erc;

    MoeBlock(BlockContext x, int l, Activations a) {
        this.x = x;
        this.l = l;
        this.a = a;
        ModelWeights w = x.weights;
        int E = x.E;
        wNorm2 = w.vectorOffset(ParamLayout.preFeedForwardNorm(l));
        wr = w.vectorOffset(ParamLayout.router(l));
        w13 = new long[E];
        w2 = new long[E];
        for (int j = 0; j < E; j++) {
            w13[j] = w.matrixOffset(ParamLayout.gateProj(l, j));
            if (w.matrixOffset(ParamLayout.upProj(l, j)) != w13[j] + (long) x.hid * x.d)
                throw new Moe4jException("layout: layer " + l + " expert " + j + ": up_proj must follow gate_proj");
            w2[j] = w.matrixOffset(ParamLayout.downProj(l, j));
        }
        keptList = new int[x.routed];
        erc = x.training() ? new ExpertRouterCoupling(x.d, x.hid, x.routed, x.gemm, x.ws.arena()) : null;
    }

    Routing routing() {
        return a.routing;
    }

    /** h [N, d] -> out [N, d], routed by {@code ctl}. */
    void forward(MemorySegment h, MemorySegment out, RoutingControl ctl) {
        BlockContext x = this.x;
        Batch b = x.batch;
        int N = b.N, d = x.d, E = x.E, hid = x.hid;
        MemorySegment xn2 = a.xn2.segment();
        x.ops.rmsNorm(h, 0, x.P, wNorm2, xn2, 0, a.rstd2.segment(), 0, d, x.eps, N);
        x.linearF32(N, E, d, xn2, 0, d, wr, 0f, a.rlogits.segment(), 0, E);
        Routing r = a.routing;
        if (VectorOps.firstNonFinite(a.rlogits.segment(), 0, (long) N * E) >= 0)
            throw new NonFiniteException(x.nonFiniteReport.get());
        a.router.forward(a.rlogits, N, b.seqStart, b.B, b.tokens, ctl, r);
        int kTot = r.kTot(), S = r.keptSlots();
        if (kTot > x.kTotMax)
            throw new Moe4jException("layer " + l + ": routing picked k' = " + r.kRouted() + " experts per token, this "
                    + "runner was built for at most " + (x.kTotMax - x.shared) + " (pass maxRoutedK)");
        int[] rowOfSlot = a.rowOfSlot;
        Arrays.fill(rowOfSlot, 0, N * kTot, -1);
        for (int i = 0; i < S; i++) rowOfSlot[r.perm[i]] = i;
        x.ops.gather(xn2, a.xe.segment(), r.perm, kTot, d, S);
        MemorySegment xe = a.xe.segment(), a13 = a.a13.segment(), act = a.act.segment(), ye = a.ye.segment();
        for (int e = 0; e < E; e++) {
            int s = r.offsets[e], n = r.offsets[e + 1] - s;
            if (n == 0) continue;
            x.linear(n, 2 * hid, d, xe, (long) s * d, d, w13[e], 0f, a13, (long) s * 2 * hid, 2 * hid);
        }
        x.ops.swiGlu(a13, 0, act, 0, hid, S);
        for (int e = 0; e < E; e++) {
            int s = r.offsets[e], n = r.offsets[e + 1] - s;
            if (n == 0) continue;
            x.linear(n, d, hid, act, (long) s * hid, hid, w2[e], 0f, ye, (long) s * d, d);
        }
        MemorySegment.copy(h, 0, out, 0, (long) N * d * 4);
        x.ops.combine(ye, out, rowOfSlot, r.gate, kTot, d, N);
    }

    /** dx holds dL/dy on entry and dL/dh on return. */
    void backward(MemorySegment h, LossWeights w, boolean ercOn) {
        BlockContext x = this.x;
        int N = x.batch.N, d = x.d, E = x.E, hid = x.hid, L = x.L;
        MemorySegment P = x.P, G = x.G;
        Routing r = a.routing;
        int kTot = r.kTot(), S = r.keptSlots();
        MemorySegment dxs = x.dx.segment(), xe = a.xe.segment(), a13 = a.a13.segment(), act = a.act.segment();
        MemorySegment ye = a.ye.segment(), dyes = x.dye.segment(), dacts = x.dact.segment();
        // MoE: y = h + Σ g·ye
        x.ops.combineBackward(ye, dxs, dyes, r.perm, r.gate, x.dGate, kTot, d, S);
        for (int e = 0; e < E; e++) {
            int s = r.offsets[e], n = r.offsets[e + 1] - s;
            if (n == 0) continue;
            x.linearBackInput(n, hid, d, dyes, (long) s * d, d, w2[e], 0f, dacts, (long) s * hid, hid);
            x.linearBackWeight(d, hid, n, dyes, (long) s * d, d, act, (long) s * hid, hid, w2[e]);
        }
        x.ops.swiGluBackward(dacts, 0, a13, 0, a13, 0, hid, S); // a13 now holds d[W1 x | W3 x]
        MemorySegment dxe = dyes; // dye is consumed; reuse it for the expert input gradient
        for (int e = 0; e < E; e++) {
            int s = r.offsets[e], n = r.offsets[e + 1] - s;
            if (n == 0) continue;
            x.linearBackWeight(2 * hid, d, n, a13, (long) s * 2 * hid, 2 * hid, xe, (long) s * d, d, w13[e]);
            x.linearBackInput(n, d, 2 * hid, a13, (long) s * 2 * hid, 2 * hid, w13[e], 0f, dxe, (long) s * d, d);
        }
        MemorySegment dxn2 = x.tmp.segment();
        VectorOps.zero(dxn2, 0, (long) N * d);
        x.ops.scatterAdd(dxe, dxn2, a.rowOfSlot, kTot, d, N);
        // router: gates, load balance, z-loss
        float[] dLogits = x.dLogits;
        a.router.backward(r, x.dGate, dLogits);
        a.router.loadBalanceBackward(r, x.c.routing().lbScope(), w.lb() / L, dLogits);
        a.router.zLossBackward(r, w.routerZ() / L, dLogits);
        MemorySegment dlog = x.dlogR.segment();
        MemorySegment.copy(dLogits, 0, dlog, Tensor.FLOAT, 0, N * E);
        MemorySegment xn2 = a.xn2.segment();
        x.gemm.sgemm(true, false, E, d, N, 1f, dlog, 0, E, xn2, 0, d, 1f, G, wr, d);
        x.gemm.sgemm(false, false, N, d, E, 1f, dlog, 0, E, P, wr, d, 1f, dxn2, 0, d);
        if (ercOn) erc.backward(w.erc() / L, P, G, wr, w13);
        x.ops.rmsNormBackward(dxn2, 0, h, 0, P, wNorm2, a.rstd2.segment(), 0, dxs, 0, true, G, wNorm2, d, N);
    }

    String firstNonFinite() {
        String at = x.scan(new Tensor[] {a.xn2, a.rlogits}, new String[] {"feed-forward norm", "router logits"});
        if (at != null) return at;
        long i = VectorOps.firstNonFinite(a.ye.segment(), 0, (long) a.routing.keptSlots() * x.d);
        return i < 0 ? null : "tensor 'expert output' row " + i / x.d;
    }
}
