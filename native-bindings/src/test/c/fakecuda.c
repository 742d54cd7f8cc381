/*
 * A CPU stand-in for the parts of libcudart and libcublas that moe4j binds, for CudaMockTest: "device" memory is
 * host memory, streams are synchronous, and the cuBLAS calls are the reference column-major BLAS definitions
 * (C = alpha op(A) op(B) + beta C, op(X) = X or X^T, element (i, j) of a column-major matrix at i + j * ld).
 * Prototypes as in cuda_runtime_api.h / cublas_api.h (CUDA 11-13). Built twice, as libcudart.so.13 and
 * libcublas.so.13, from this one file: each library exports everything, and moe4j looks each symbol up in the
 * library it expects it in.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int cudaGetDeviceCount(int *count) { *count = 1; return 0; }
const char *cudaGetErrorString(int err) { return err == 0 ? "no error" : "fake error"; }
int cudaMalloc(void **p, size_t size) { *p = malloc(size); return *p ? 0 : 2; }
int cudaFree(void *p) { free(p); return 0; }
int cudaMemcpy(void *dst, const void *src, size_t n, int kind) { (void) kind; memcpy(dst, src, n); return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    (void) kind; (void) stream; memcpy(dst, src, n); return 0;
}
int cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                      int kind, void *stream) {
    (void) kind; (void) stream;
    if (width > dpitch || width > spitch) return 1;
    for (size_t r = 0; r < height; r++) memcpy((char *) dst + r * dpitch, (const char *) src + r * spitch, width);
    return 0;
}
static int fake_stream;
int cudaStreamCreate(void **s) { *s = &fake_stream; return 0; }
int cudaStreamSynchronize(void *s) { return s == &fake_stream ? 0 : 400; }
int cudaStreamDestroy(void *s) { return s == &fake_stream ? 0 : 400; }

static int fake_handle;
int cublasCreate_v2(void **h) { *h = &fake_handle; return 0; }
int cublasDestroy_v2(void *h) { return h == &fake_handle ? 0 : 1; }
/* the stream comes from the other library copy: only check it is set */
int cublasSetStream_v2(void *h, void *s) { return h == &fake_handle && s != NULL ? 0 : 7; }

static float bf16(uint16_t b) { uint32_t x = (uint32_t) b << 16; float f; memcpy(&f, &x, 4); return f; }

/* one column-major GEMM; get(ptr, index) reads an element of A or B */
static int gemm(int ta, int tb, int m, int n, int k, float alpha, const void *a, int lda, const void *b, int ldb,
                float beta, float *c, int ldc, int isBf16) {
    if (m < 0 || n < 0 || k < 0 || ta < 0 || ta > 1 || tb < 0 || tb > 1) return 7;
    if (lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) || ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1))
        || ldc < (m > 1 ? m : 1)) return 7; /* CUBLAS_STATUS_INVALID_VALUE */
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                size_t ia = ta ? (size_t) p + (size_t) i * lda : (size_t) i + (size_t) p * lda;
                size_t ib = tb ? (size_t) j + (size_t) p * ldb : (size_t) p + (size_t) j * ldb;
                double av = isBf16 ? bf16(((const uint16_t *) a)[ia]) : ((const float *) a)[ia];
                double bv = isBf16 ? bf16(((const uint16_t *) b)[ib]) : ((const float *) b)[ib];
                s += av * bv;
            }
            float *cij = c + (size_t) i + (size_t) j * ldc;
            *cij = (float) (alpha * s + (beta == 0.0f ? 0.0 : (double) beta * *cij));
        }
    }
    return 0;
}

int cublasSgemm_v2(void *h, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                   const float *b, int ldb, const float *beta, float *c, int ldc) {
    if (h != &fake_handle) return 1;
    return gemm(ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc, 0);
}

int cublasGemmEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int atype, int lda,
                 const void *b, int btype, int ldb, const void *beta, void *c, int ctype, int ldc, int compute,
                 int algo) {
    if (h != &fake_handle) return 1;
    if (atype != 14 || btype != 14 || ctype != 0 || compute != 68 || algo != -1) return 15; /* NOT_SUPPORTED */
    return gemm(ta, tb, m, n, k, *(const float *) alpha, a, lda, b, ldb, *(const float *) beta, c, ldc, 1);
}

int cublasSgemmStridedBatched(void *h, int ta, int tb, int m, int n, int k, const float *alpha, const float *a,
                              int lda, long long sa, const float *b, int ldb, long long sb, const float *beta,
                              float *c, int ldc, long long sc, int batch) {
    if (h != &fake_handle) return 1;
    for (int e = 0; e < batch; e++) {
        int st = gemm(ta, tb, m, n, k, *alpha, a + e * sa, lda, b + e * sb, ldb, *beta, c + e * sc, ldc, 0);
        if (st) return st;
    }
    return 0;
}
