// HDF5 helpers shared by metrics.c and checkpoint.c: HDF5's own error printing off,
// checked calls whose failure becomes ONE line
//   "PATH: cannot create dataset /steps: <cause from the HDF5 error stack> (runtime/metrics.c:123)"
// and small attribute helpers.
#pragma once
#include <hdf5.h>
#include <stddef.h>

// Turn off HDF5's automatic error-stack printing (idempotent, cheap; call at every entry point).
void h5_quiet(void);

// Format "PATH: WHAT: CAUSE (SRC:LINE)" into err. CAUSE is the most specific message
// on the HDF5 error stack (the OS message when there is one), or nothing when the
// stack is empty; the stack is cleared.
void h5_error(char *err, size_t errlen, const char *src, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

// h5Check(call, "cannot ...", args): on a negative result (herr_t, hid_t, htri_t), set
// the message and `goto fail`. Needs `err`, `errlen` and `path` in scope and a `fail:` label.
#define h5Check(call, ...)                                                    \
    do {                                                                      \
        if ((call) < 0) {                                                     \
            h5_error(err, errlen, __FILE__, __LINE__, path, __VA_ARGS__);     \
            goto fail;                                                        \
        }                                                                     \
    } while (0)

// Close an identifier of any kind if valid and set it to -1 (errors ignored: cleanup paths).
void h5_close(hid_t *id);

// Write (replacing any old one) a scalar attribute of `type` (stored as that type, value in it).
herr_t h5_attr_write(hid_t obj, const char *name, hid_t type, const void *value);
// The same with a file type apart from the memory type (H5T_STD_I64LE on disk, H5T_NATIVE_INT64 in memory).
herr_t h5_attr_write_as(hid_t obj, const char *name, hid_t filetype, hid_t memtype, const void *value);
// Write (replacing) a 1-D attribute of n elements.
herr_t h5_attr_write_array(hid_t obj, const char *name, hid_t filetype, hid_t memtype, hsize_t n,
                           const void *values);
// Write (replacing) a scalar variable-length UTF-8 string attribute (NULL is written as "").
herr_t h5_attr_write_str(hid_t obj, const char *name, const char *s);
// Read a string attribute (variable- or fixed-length) into a malloc'd string; NULL on failure.
char *h5_attr_read_str(hid_t obj, const char *name);
