// HDF5 helpers: one-line error messages from the HDF5 error stack, attribute I/O.
#include "h5util.h"
#include "h5err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

void h5_error(char *err, size_t errlen, const char *src, int line, const char *path, const char *fmt, ...) {
    if (!err || !errlen) return;
    const char *cause = h5_cause();
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *base = strrchr(src, '/');
    // Source position after the cause: the user reads the first part, a developer the last.
    snprintf(err, errlen, "%s: %s%s%s (%s:%d)", path, what, cause ? ": " : "", cause ? cause : "",
             base ? base + 1 : src, line);
}

void h5_close(hid_t *id) {
    if (*id < 0) return;
    switch (H5Iget_type(*id)) {
    case H5I_FILE: H5Fclose(*id); break;
    case H5I_GROUP: H5Gclose(*id); break;
    case H5I_DATASET: H5Dclose(*id); break;
    case H5I_DATASPACE: H5Sclose(*id); break;
    case H5I_DATATYPE: H5Tclose(*id); break;
    case H5I_ATTR: H5Aclose(*id); break;
    case H5I_GENPROP_LST: H5Pclose(*id); break;
    default: break;
    }
    *id = -1;
}

static herr_t attr_write_space(hid_t obj, const char *name, hid_t filetype, hid_t memtype, hid_t space,
                               const void *value) {
    herr_t rc = -1;
    hid_t attr = -1;
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0) return -1;
    if (exists && H5Adelete(obj, name) < 0) return -1;
    attr = H5Acreate2(obj, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0 && H5Awrite(attr, memtype, value) >= 0) rc = 0;
    h5_close(&attr);
    return rc;
}

herr_t h5_attr_write(hid_t obj, const char *name, hid_t type, const void *value) {
    return h5_attr_write_as(obj, name, type, type, value);
}

herr_t h5_attr_write_as(hid_t obj, const char *name, hid_t filetype, hid_t memtype, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0) return -1;
    herr_t rc = attr_write_space(obj, name, filetype, memtype, space, value);
    H5Sclose(space);
    return rc;
}

herr_t h5_attr_write_array(hid_t obj, const char *name, hid_t filetype, hid_t memtype, hsize_t n,
                           const void *values) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    if (space < 0) return -1;
    herr_t rc = attr_write_space(obj, name, filetype, memtype, space, values);
    H5Sclose(space);
    return rc;
}

herr_t h5_attr_write_str(hid_t obj, const char *name, const char *s) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0) return -1;
    herr_t rc = -1;
    const char *value = s ? s : "";
    if (H5Tset_size(type, H5T_VARIABLE) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0)
        rc = h5_attr_write(obj, name, type, &value);
    H5Tclose(type);
    return rc;
}

char *h5_attr_read_str(hid_t obj, const char *name) {
    char *out = NULL;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT), type = -1, space = -1;
    if (attr < 0) goto done;
    if ((type = H5Aget_type(attr)) < 0 || H5Tget_class(type) != H5T_STRING) goto done;
    if ((space = H5Aget_space(attr)) < 0 || H5Sget_simple_extent_npoints(space) != 1) goto done;
    htri_t vl = H5Tis_variable_str(type);
    if (vl > 0) {
        char *s = NULL;
        // The file's own string type as memory type: no charset conversion needed.
        if (H5Aread(attr, type, &s) >= 0) {
            out = strdup(s ? s : "");
            H5free_memory(s);
        }
    } else if (vl == 0) {
        size_t size = H5Tget_size(type);
        char *buf = calloc(1, size + 1);
        if (buf && H5Aread(attr, type, buf) >= 0) out = buf;
        else free(buf);
    }
done:
    h5_close(&space);
    h5_close(&type);
    h5_close(&attr);
    return out;
}
