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

        /** Layer l's activations (training: one set per layer). */
        Activations(BlockContext x, String p, int l) {
            int maxN = x.maxN, slots = x.slots();
            xn2 = x.ws.allocate(p + "xn2", maxN, x.d);
            rstd2 = x.ws.allocate(p + "rstd2", maxN);
            rlogits = x.ws.allocate(p + "routerLogits", maxN, x.E); // E = the largest layer's: fits every layer
            xe = x.ws.allocate(p + "expertIn", slots, x.d);
            a13 = x.ws.allocate(p + "expertGateUp", slots, 2 * x.hid);
            act = x.ws.allocate(p + "expertAct", slots, x.hid);
            ye = x.ws.allocate(p + "expertOut", slots, x.d);
            router = new Router(x.c, l, maxN, x.maxSeqs, x.pool);
            routing = router.newRouting();
            rowOfSlot = new int[slots];
        }

        /**
         * The buffers of {@code share} with a router for layer l (forward-only runners share one set of buffers
         * between layers; a router and its routing are sized by the layer's E_l, so layers that differ in E get
         * their own).
         */
        Activations(BlockContext x, Activations share, int l) {
            xn2 = share.xn2;
            rstd2 = share.rstd2;
            rlogits = share.rlogits;
            xe = share.xe;
            a13 = share.a13;
            act = share.act;
            ye = share.ye;
            rowOfSlot = share.rowOfSlot;
            router = new Router(x.c, l, x.maxN, x.maxSeqs, x.pool);
            routing = router.newRouting();
        }

        /** Experts of the layer this router serves. */
        int experts() {
            return routing.experts();
        }
    }

    private final BlockContext x;
    final int l;
    /** E_l, this layer's experts (shared included), and E_l - s, its routed ones. */
    final int E, routed;
    final Activations a;
    final long wNorm2, wr;
    /** Each expert's [W1; W3] and W2 offsets in the weights; -1 for a routed expert this process does not hold. */
    final long[] w13, w2;
    /**
     * ERC: where each routed expert's W1 [h, d] is read, the weights for the experts held here, else what an expert
     * executor installed ({@link #w1From}): an expert-parallel rank's copy of the other ranks' W1.
     */
    final MemorySegment[] w1Store;
    final long[] w1At;
    /** Scratch for runExperts: the experts with rows as groups of one product (rows, input, weight, output offsets). */
    private final int[] gRows, gExpert, gSlot;
    private final long[] gIn, gW, gOut;
    final int[] keptList;
    /** What the expert executor sees of this block. */
    final ExpertSlots slots;
    /** Expert–router coupling (training only). */
    final ExpertRouterCoupling erc;

    MoeBlock(BlockContext x, int l, Activations a) {
        this.x = x;
        this.l = l;
        this.a = a;
        ModelWeights w = x.weights;
        E = x.c.experts(l);
        routed = x.c.routedExperts(l);
        if (a.experts() != E)
            throw new Moe4jException("layer " + l + ": activations routed for " + a.experts() + " experts, the layer has " + E);
        wNorm2 = w.vectorOffset(ParamLayout.preFeedForwardNorm(l));
        wr = w.vectorOffset(ParamLayout.router(l));
        w13 = new long[E];
        w2 = new long[E];
        gRows = new int[E];
        gExpert = new int[E];
        gSlot = new int[E];
        gIn = new long[E];
        gW = new long[E];
        gOut = new long[E];
        w1Store = new MemorySegment[E];
        w1At = new long[E];
        for (int j = 0; j < E; j++) {
            if (!w.layout().holds(l, j)) { // another rank's expert (expert parallel)
                w13[j] = w2[j] = w1At[j] = -1;
                continue;
            }
            w13[j] = w.matrixOffset(ParamLayout.gateProj(l, j));
            if (w.matrixOffset(ParamLayout.upProj(l, j)) != w13[j] + (long) x.hid * x.d)
                throw new Moe4jException("layout: layer " + l + " expert " + j + ": up_proj must follow gate_proj");
            w2[j] = w.matrixOffset(ParamLayout.downProj(l, j));
            w1Store[j] = x.P;
            w1At[j] = w13[j];
        }
        keptList = new int[routed];
        slots = new ExpertSlots(this, x);
        erc = x.training() ? new ExpertRouterCoupling(x.d, x.hid, routed, x.gemm, x.ws.arena()) : null;
    }

    Routing routing() {
        return a.routing;
    }

    /** ERC reads the W1 [h, d] of expert j, which this process does not hold, at element {@code at} of {@code store}. */
    void w1From(int j, MemorySegment store, long at) {
        if (j < 0 || j >= routed || w13[j] >= 0)
            throw new Moe4jException("layer " + l + ": expert " + j + " is not a routed expert held elsewhere (routed "
                    + routed + ", held here: " + (j >= 0 && j < E && w13[j] >= 0) + ")");
        w1Store[j] = store;
        w1At[j] = at;
    }

    /** The error for running expert e, which this process does not hold. */
    private Moe4jException notHeld(int e) {
        ParamLayout lay = x.weights.layout();
        return new Moe4jException("layer " + l + ": expert " + e + " is not held by this process (an expert-parallel "
                + "rank holds routed experts " + lay.firstExpert() + ".." + (lay.firstExpert() + lay.heldExperts() - 1)
                + "); its rows go to its owner through the rank's ExpertParallel executor");
    }

    /** h [N, d] -> out [N, d], routed by {@code ctl}. */
    void forward(MemorySegment h, MemorySegment out, RoutingControl ctl) {
        BlockContext x = this.x;
        Batch b = x.batch;
        int N = b.N, d = x.d, E = this.E;
        MemorySegment xn2 = a.xn2.segment();
        PhaseTimer.enter(PhaseTimer.Phase.ROUTER_GEMM);
        x.ops.rmsNorm(h, 0, x.P, wNorm2, xn2, 0, a.rstd2.segment(), 0, d, x.eps, N);
        x.linearF32(N, E, d, xn2, 0, d, wr, 0f, a.rlogits.segment(), 0, E);
        Routing r = a.routing;
        if (VectorOps.firstNonFinite(a.rlogits.segment(), 0, (long) N * E) >= 0)
            throw new NonFiniteException(x.nonFiniteReport.get());
        PhaseTimer.enter(PhaseTimer.Phase.ROUTER);
        a.router.forward(a.rlogits, N, b.seqStart, b.B, b.tokens, ctl, r);
        int kTot = r.kTot(), S = r.keptSlots();
        if (kTot > x.kTotMax)
            throw new Moe4jException("layer " + l + ": routing picked k' = " + r.kRouted() + " experts per token, this "
                    + "runner was built for at most " + (x.kTotMax - x.shared) + " (pass maxRoutedK)");
        PhaseTimer.enter(PhaseTimer.Phase.DISPATCH);
        int[] rowOfSlot = a.rowOfSlot;
        Arrays.fill(rowOfSlot, 0, N * kTot, -1);
        for (int i = 0; i < S; i++) rowOfSlot[r.perm[i]] = i;
        x.ops.gather(xn2, a.xe.segment(), r.perm, kTot, d, S);
        PhaseTimer.enter(PhaseTimer.Phase.EXPERTS);
        x.experts.forward(slots); // xe -> ye; locally runExperts over every expert
        PhaseTimer.enter(PhaseTimer.Phase.DISPATCH);
        MemorySegment.copy(h, 0, out, 0, (long) N * d * 4);
        x.ops.combine(a.ye.segment(), out, rowOfSlot, r.gate, kTot, d, N);
    }

    /**
     * Experts base+from .. base+to-1 over their rows offsets[i] .. offsets[i+1] (i in [from, to)) of xe [rows, d]
     * -> ye [rows, d], keeping a13 [rows, 2h] and act [rows, h] for the backward. The block's own call is over every
     * expert with the routing's offsets; expert parallelism calls it for the experts a rank owns over the rows it
     * received, and for the shared experts over the local rows.
     */
    void runExperts(int[] offsets, int from, int to, int base, MemorySegment xe, MemorySegment a13, MemorySegment act,
                    MemorySegment ye) {
        int d = x.d, hid = x.hid;
        // the experts with rows, as groups of one product shape ([W1; W3], then W2): one pass over the pool each
        int g = 0;
        for (int i = from; i < to; i++) {
            int e = base + i, s = offsets[i], n = offsets[i + 1] - s;
            if (w13[e] < 0) throw notHeld(e);
            if (n == 0) continue;
            gRows[g] = n;
            gIn[g] = (long) s * d;
            gW[g] = w13[e];
            gOut[g] = (long) s * 2 * hid;
            g++;
        }
        x.linearGrouped(g, gRows, gIn, gW, gOut, 2 * hid, d, xe, d, a13, 2 * hid);
        int s0 = offsets[from];
        x.ops.swiGlu(a13, (long) s0 * 2 * hid, act, (long) s0 * hid, hid, offsets[to] - s0);
        g = 0;
        for (int i = from; i < to; i++) {
            int e = base + i, s = offsets[i], n = offsets[i + 1] - s;
            if (n == 0) continue;
            gIn[g] = (long) s * hid;
            gW[g] = w2[e];
            gOut[g] = (long) s * d;
            g++;
        }
        x.linearGrouped(g, gRows, gIn, gW, gOut, d, hid, act, hid, ye, d);
    }

    /** dx holds dL/dy on entry and dL/dh on return. */
    void backward(MemorySegment h, LossWeights w, boolean ercOn) {
        BlockContext x = this.x;
        int N = x.batch.N, d = x.d, E = this.E, L = x.L;
        MemorySegment P = x.P, G = x.G;
        Routing r = a.routing;
        int kTot = r.kTot(), S = r.keptSlots();
        MemorySegment dxs = x.dx.segment(), ye = a.ye.segment(), dyes = x.dye.segment();
        // MoE: y = h + Σ g·ye
        PhaseTimer.enter(PhaseTimer.Phase.DISPATCH_BWD);
        x.ops.combineBackward(ye, dxs, dyes, r.perm, r.gate, x.dGate, kTot, d, S);
        PhaseTimer.enter(PhaseTimer.Phase.EXPERTS_BWD);
        x.experts.backward(slots); // dye -> dxe (in dye's place), expert weight gradients; locally runExpertsBackward
        MemorySegment dxe = dyes;
        PhaseTimer.enter(PhaseTimer.Phase.DISPATCH_BWD);
        MemorySegment dxn2 = x.tmp.segment();
        VectorOps.zero(dxn2, 0, (long) N * d);
        x.ops.scatterAdd(dxe, dxn2, a.rowOfSlot, kTot, d, N);
        // router: gates, load balance, z-loss
        PhaseTimer.enter(PhaseTimer.Phase.ROUTER_BWD);
        float[] dLogits = x.dLogits;
        a.router.backward(r, x.dGate, dLogits);
        a.router.loadBalanceBackward(r, x.c.routing().lbScope(), w.lb() / L, dLogits);
        a.router.zLossBackward(r, w.routerZ() / L, dLogits);
        MemorySegment dlog = x.dlogR.segment();
        MemorySegment.copy(dLogits, 0, dlog, Tensor.FLOAT, 0, N * E);
        MemorySegment xn2 = a.xn2.segment();
        x.gemm.sgemm(true, false, E, d, N, 1f, dlog, 0, E, xn2, 0, d, 1f, G, wr, d);
        x.gemm.sgemm(false, false, N, d, E, 1f, dlog, 0, E, P, wr, d, 1f, dxn2, 0, d);
        if (ercOn) {
            PhaseTimer.enter(PhaseTimer.Phase.ERC_BWD);
            erc.backward(w.erc() / L, x.experts.ercExpertScale(), P, G, wr, w1Store, w1At, w13);
            PhaseTimer.enter(PhaseTimer.Phase.ROUTER_BWD);
        }
        x.ops.rmsNormBackward(dxn2, 0, h, 0, P, wNorm2, a.rstd2.segment(), 0, dxs, 0, true, G, wNorm2, d, N);
    }

    /**
     * The backward of {@link #runExperts} over the same rows: dye [rows, d] (dL/dye) -> dxe [rows, d] (may be dye
     * itself), adding the experts' weight gradients; dact [rows, h] is scratch, a13 is overwritten with d[W1 x | W3 x].
     */
    void runExpertsBackward(int[] offsets, int from, int to, int base, MemorySegment xe, MemorySegment a13,
                            MemorySegment act, MemorySegment dye, MemorySegment dact, MemorySegment dxe) {
        int g = 0;
        for (int i = from; i < to; i++) {
            int e = base + i, s = offsets[i], n = offsets[i + 1] - s;
            if (w13[e] < 0) throw notHeld(e);
            if (n == 0) continue;
            gRows[g] = n;
            gExpert[g] = e;
            gSlot[g] = s;
            g++;
        }
        bXe = xe;
        bA13 = a13;
        bAct = act;
        bDye = dye;
        bDact = dact;
        bDxe = dxe;
        try {
            // each expert's products write its own rows of dact / dxe and its own gradients: experts run concurrently
            x.forGroups(g, gRows, w2Backward);
            int s0 = offsets[from];
            x.ops.swiGluBackward(dact, (long) s0 * x.hid, a13, (long) s0 * 2 * x.hid, a13, (long) s0 * 2 * x.hid,
                    x.hid, offsets[to] - s0); // a13 now holds d[W1 x | W3 x]
            x.forGroups(g, gRows, w13Backward);
        } finally {
            bXe = bA13 = bAct = bDye = bDact = bDxe = null;
        }
    }

    /** runExpertsBackward's operands while it runs. */
    private MemorySegment bXe, bA13, bAct, bDye, bDact, bDxe;

    private final BlockContext.GroupTask w2Backward = this::w2Backward, w13Backward = this::w13Backward;

    /** Group g (expert gExpert[g], rows gSlot[g]..+gRows[g]): dact = dye · W2 and dW2 += dyeᵀ · act. */
    private void w2Backward(int g, BlockContext.Lane ln) {
        int d = x.d, hid = x.hid, e = gExpert[g], s = gSlot[g], n = gRows[g];
        x.linearBackInput(ln, n, hid, d, bDye, (long) s * d, d, w2[e], 0f, bDact, (long) s * hid, hid);
        x.linearBackWeight(ln, d, hid, n, bDye, (long) s * d, d, bAct, (long) s * hid, hid, w2[e]);
    }

    /** Group g: d[W1; W3] += da13ᵀ · xe and dxe = da13 · [W1; W3]. */
    private void w13Backward(int g, BlockContext.Lane ln) {
        int d = x.d, hid = x.hid, e = gExpert[g], s = gSlot[g], n = gRows[g];
        x.linearBackWeight(ln, 2 * hid, d, n, bA13, (long) s * 2 * hid, 2 * hid, bXe, (long) s * d, d, w13[e]);
        x.linearBackInput(ln, n, d, 2 * hid, bA13, (long) s * 2 * hid, 2 * hid, w13[e], 0f, bDxe, (long) s * d, d);
    }

    String firstNonFinite() {
        String at = x.scan(new Tensor[] {a.xn2, a.rlogits}, new String[] {"feed-forward norm", "router logits"});
        if (at != null) return at;
        long i = VectorOps.firstNonFinite(a.ye.segment(), 0, (long) a.routing.keptSlots() * x.d);
        return i < 0 ? null : "tensor 'expert output' row " + i / x.d;
    }
}
