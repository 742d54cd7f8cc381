// The DRAM read yardstick of bench/RESULTS.md (ninth session): a plain AVX-512 read of 1 GiB by OpenMP threads,
// outside the JVM, to check the in-process probe of DecodeBench. Needs gcc and an AVX-512 CPU.
//   gcc -O2 -mavx512f -fopenmp bench/scripts/read-probe.c -o /tmp/read-probe && OMP_NUM_THREADS=2 /tmp/read-probe 10
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
#include <omp.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t n=(size_t)1<<28; /* 1 GiB of floats */
  float*a=aligned_alloc(64,n*4); memset(a,0x3c,n*4);
  int reps=argc>1?atoi(argv[1]):10;
  for(int r=0;r<reps;r++){
    double t0=now(); float tot=0;
    #pragma omp parallel reduction(+:tot)
    { __m512 s0=_mm512_setzero_ps(),s1=s0,s2=s0,s3=s0;
      #pragma omp for schedule(static)
      for(size_t i=0;i<n;i+=64){ s0=_mm512_add_ps(s0,_mm512_load_ps(a+i)); s1=_mm512_add_ps(s1,_mm512_load_ps(a+i+16));
        s2=_mm512_add_ps(s2,_mm512_load_ps(a+i+32)); s3=_mm512_add_ps(s3,_mm512_load_ps(a+i+48)); }
      tot+=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0,s1),_mm512_add_ps(s2,s3)));
    }
    double t=now()-t0; printf("%d threads: %.2f GB/s (%g)\n",omp_get_max_threads(),n*4/t/1e9,tot);
  }
}
