// A tiny TAP producer for the C unit tests: CHECK prints "ok N - what" or
// "not ok N - what" with file:line and a reason. tests/run.sh counts the lines.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_n, check_failed;

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        int ok_ = (cond);                                                           \
        printf("%s %d - ", ok_ ? "ok" : "not ok", ++check_n);                        \
        printf(__VA_ARGS__);                                                        \
        printf("\n");                                                               \
        if (!ok_) {                                                                 \
            check_failed++;                                                         \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                           \
        fflush(stdout);                                                             \
    } while (0)

// |got - want| <= atol + rtol * |want|, elementwise; reports the worst element.
static inline int check_close(const char *what, const double *got, const double *want, long n, double rtol,
                              double atol) {
    long worst = -1;
    double worst_excess = 0;
    for (long i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]), tol = atol + rtol * fabs(want[i]);
        if (!(err <= tol) && (worst < 0 || err - tol > worst_excess)) { worst = i; worst_excess = err - tol; }
    }
    CHECK(worst < 0, "%s (n=%ld, rtol=%g, atol=%g)", what, n, rtol, atol);
    if (worst >= 0) printf("#   worst element %ld: got %.9g want %.9g\n", worst, got[worst], want[worst]);
    return worst < 0;
}

static inline int check_done(void) {
    printf("1..%d\n", check_n);
    return check_failed ? 1 : 0;
}
