#include "h5err.h"

#include <hdf5.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char text[256];
    bool have;
} Cause;

// Walked upward: the first entry is the innermost one. The sec2 driver says
// "..., errno = 28, error message = 'No space left on device', ...": that part is
// the cause a user can act on.
static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    Cause *c = data;
    (void)n;
    if (c->have || !e->desc || !e->desc[0]) return 0;
    const char *os = strstr(e->desc, "error message = '");
    if (os) {
        os += strlen("error message = '");
        const char *end = strchr(os, '\'');
        snprintf(c->text, sizeof c->text, "%.*s", end ? (int)(end - os) : (int)strlen(os), os);
    } else {
        snprintf(c->text, sizeof c->text, "%s", e->desc);
    }
    c->have = true;
    return 0;
}

const char *h5_cause(void) {
    static Cause c;
    memset(&c, 0, sizeof c);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, &c);
    H5Eclear2(H5E_DEFAULT);
    return c.have ? c.text : NULL;
}

void h5_errf(char *err, size_t errlen, const char *fmt, ...) {
    const char *cause = h5_cause();
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (cause && n >= 0 && (size_t)n < errlen) snprintf(err + n, errlen - (size_t)n, ": %s", cause);
}
