/**
 * Native GEMM backends bound through FFM, each an implementation of {@link org.moe4j.simd.Gemm}, chosen once at
 * start-up by {@link org.moe4j.nativ.GemmBackends} ({@code auto | java | onednn | cuda}).
 *
 * <ul>
 *   <li>{@link org.moe4j.nativ.NativeLibraries}: finds {@code libdnnl.so.3} and {@code libgomp.so.1} in the
 *   {@code org.bytedeco:dnnl} linux-x86_64 jar, extracts them to a versioned, digest-checked cache folder (safe
 *   against concurrent start-ups) and dlopens them; or loads a system oneDNN.</li>
 *   <li>{@link org.moe4j.nativ.OneDnn}: the oneDNN 3.x C entry points and constants; {@code available()} /
 *   {@code reason()}.</li>
 *   <li>{@link org.moe4j.nativ.OneDnnGemm}: {@code dnnl_sgemm}. {@link org.moe4j.nativ.OneDnnMatmul}: the matmul
 *   primitive, f32 or bf16 inputs with f32 output, one cached primitive per shape.</li>
 *   <li>{@link org.moe4j.nativ.Cuda} and {@link org.moe4j.nativ.CudaGemm}: CUDA runtime and cuBLAS by soname,
 *   host-operand and device-resident GEMMs.</li>
 * </ul>
 *
 * A missing or broken native library is never fatal: one log line, {@code reason()} says why, and the Java
 * kernel runs instead.
 */
package org.moe4j.nativ;
