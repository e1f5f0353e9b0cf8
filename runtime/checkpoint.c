// Checkpoints (ARCHITECTURE §4.5): one HDF5 file of full float32 tensors in three
// groups (/params, /adam_m, /adam_v), one contiguous dataset per tensor written with
// one H5Dwrite (disk speed, no chunking), and the training state as attributes of /.
// Atomic: built under "PATH.tmp.PID", closed, fsync'd, renamed onto PATH, directory
// fsync'd; on any failure the temp file is removed and PATH is untouched.
#include "checkpoint.h"

#include "common.h"
#include "h5util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CKPT_FORMAT_VERSION = 1 };

static const char *const GROUPS[3] = {"params", "adam_m", "adam_v"};

static void shape_str(char *buf, size_t len, int ndim, const hsize_t *dims) {
    size_t at = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, d ? ",%llu" : "%llu", (unsigned long long)dims[d]);
    if (at < len) snprintf(buf + at, len - at, ")");
}

// Inputs are checked before any file is created: names usable as HDF5 link names,
// shapes positive, m and v laid out like params.
static int check_tensors(const char *path, const CkptTensor *const sets[3], int n, char *err, size_t errlen) {
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < n; i++) {
            const CkptTensor *t = &sets[g][i], *p = &sets[0][i];
            if (!t->name || !t->name[0] || strchr(t->name, '/') || !strcmp(t->name, ".")) {
                snprintf(err, errlen, "%s: tensor %d of /%s has an invalid name '%s'", path, i, GROUPS[g],
                         t->name ? t->name : "(null)");
                return -1;
            }
            if (t->ndim < 1 || t->ndim > 4 || !t->data) {
                snprintf(err, errlen, "%s: /%s/%s: ndim %d (1..4) or no data", path, GROUPS[g], t->name, t->ndim);
                return -1;
            }
            for (int d = 0; d < t->ndim; d++)
                if (t->shape[d] <= 0) {
                    snprintf(err, errlen, "%s: /%s/%s: dimension %d is %ld", path, GROUPS[g], t->name, d, t->shape[d]);
                    return -1;
                }
            int same = strcmp(t->name, p->name) == 0 && t->ndim == p->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == p->shape[d];
            if (!same) {
                snprintf(err, errlen, "%s: /%s/%s does not match /params/%s in name or shape", path, GROUPS[g],
                         t->name, p->name);
                return -1;
            }
        }
    return 0;
}

static int write_group(hid_t file, const char *gname, const CkptTensor *ts, int n, const char *path, char *err,
                       size_t errlen) {
    hid_t group = -1, space = -1, ds = -1, dcpl = -1;
    h5Check(group = H5Gcreate2(file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "cannot create group /%s", gname);
    // Contiguous, allocated and written once: no fill pass before the data.
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), "cannot create a property list");
    h5Check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "cannot set the fill time");
    for (int i = 0; i < n; i++) {
        hsize_t dims[4];
        for (int d = 0; d < ts[i].ndim; d++) dims[d] = (hsize_t)ts[i].shape[d];
        h5Check(space = H5Screate_simple(ts[i].ndim, dims, NULL), "cannot create the dataspace of /%s/%s", gname,
                ts[i].name);
        h5Check(ds = H5Dcreate2(group, ts[i].name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                "cannot create dataset /%s/%s", gname, ts[i].name);
        h5Check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ts[i].data), "cannot write /%s/%s",
                gname, ts[i].name);
        h5_close(&ds);
        h5_close(&space);
    }
    h5_close(&dcpl);
    h5Check(H5Gclose(group), "cannot close group /%s", gname);
    return 0;
fail:
    h5_close(&ds);
    h5_close(&space);
    h5_close(&dcpl);
    h5_close(&group);
    return -1;
}

int checkpoint_write(const char *path, const CkptTensor *params, const CkptTensor *m, const CkptTensor *v, int n,
                     const CkptState *st, char *err, size_t errlen) {
    h5_quiet();
    const CkptTensor *const sets[3] = {params, m, v};
    if (n < 0 || check_tensors(path, sets, n, err, errlen) != 0) {
        if (n < 0) snprintf(err, errlen, "%s: negative tensor count %d", path, n);
        return -1;
    }
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    hid_t file = -1;
    h5Check(file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "cannot create temporary file %s", tmp);
    for (int g = 0; g < 3; g++)
        if (write_group(file, GROUPS[g], sets[g], n, path, err, errlen) != 0) goto fail;
    int32_t version = CKPT_FORMAT_VERSION;
    h5Check(h5_attr_write_as(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version),
            "cannot write attribute format_version");
    h5Check(h5_attr_write_as(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &st->step), "cannot write attribute step");
    h5Check(h5_attr_write_as(file, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st->seed), "cannot write attribute seed");
    h5Check(h5_attr_write_array(file, "rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, 4, st->rng),
            "cannot write attribute rng");
    h5Check(h5_attr_write_as(file, "data_position", H5T_STD_I64LE, H5T_NATIVE_INT64, &st->data_position),
            "cannot write attribute data_position");
    h5Check(h5_attr_write_str(file, "model", st->model_json), "cannot write attribute model");
    herr_t closed = H5Fclose(file);
    file = -1;
    h5Check(closed, "cannot close temporary file %s", tmp);

    // H5Fclose hands the data to the kernel; the commit syncs it before the rename publishes it.
    // A failed directory fsync (1) leaves the file complete at PATH but is still an error here.
    int committed = commit_tmp_file(tmp, path, err, errlen);
    free(tmp);
    return committed == 0 ? 0 : -1;

fail:
    h5_close(&file);
    unlink(tmp);
    free(tmp);
    return -1;
}

// Check that /GNAME holds exactly the tensors ts (float32, same shapes).
static int check_group(hid_t file, const char *gname, const CkptTensor *ts, int n, const char *path, char *err,
                       size_t errlen) {
    hid_t group = -1, ds = -1, space = -1, type = -1;
    char loc[512];
    h5Check(group = H5Gopen2(file, gname, H5P_DEFAULT), "cannot open group /%s", gname);
    for (int i = 0; i < n; i++) {
        snprintf(loc, sizeof loc, "/%s/%s", gname, ts[i].name ? ts[i].name : "(null)");
        if (!ts[i].name || ts[i].ndim < 1 || ts[i].ndim > 4 || !ts[i].data) {
            snprintf(err, errlen, "%s: expected tensor %s: no name, ndim %d (1..4) or no buffer", path, loc,
                     ts[i].ndim);
            goto fail;
        }
        htri_t exists = H5Lexists(group, ts[i].name, H5P_DEFAULT);
        h5Check(exists, "cannot look up %s", loc);
        if (!exists) {
            snprintf(err, errlen, "%s: %s is missing", path, loc);
            goto fail;
        }
        h5Check(ds = H5Dopen2(group, ts[i].name, H5P_DEFAULT), "cannot open %s", loc);
        h5Check(type = H5Dget_type(ds), "cannot get the type of %s", loc);
        if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4) {
            snprintf(err, errlen, "%s: %s is not float32", path, loc);
            goto fail;
        }
        h5Check(space = H5Dget_space(ds), "cannot get the shape of %s", loc);
        int ndim = H5Sget_simple_extent_ndims(space);
        hsize_t dims[H5S_MAX_RANK], want[4];
        h5Check(ndim, "cannot get the shape of %s", loc);
        h5Check(H5Sget_simple_extent_dims(space, dims, NULL), "cannot get the shape of %s", loc);
        int same = ndim == ts[i].ndim;
        for (int d = 0; d < ts[i].ndim; d++) want[d] = (hsize_t)ts[i].shape[d];
        for (int d = 0; same && d < ndim; d++) same = dims[d] == want[d];
        if (!same) {
            char have_s[128], want_s[128];
            shape_str(have_s, sizeof have_s, ndim, dims);
            shape_str(want_s, sizeof want_s, ts[i].ndim, want);
            snprintf(err, errlen, "%s: %s has shape %s, expected %s", path, loc, have_s, want_s);
            goto fail;
        }
        h5_close(&space);
        h5_close(&type);
        h5_close(&ds);
    }
    // All n expected names exist, so any further link is one the model does not have.
    H5G_info_t info;
    h5Check(H5Gget_info(group, &info), "cannot list /%s", gname);
    for (hsize_t k = 0; info.nlinks > (hsize_t)n && k < info.nlinks; k++) {
        char name[256];
        h5Check(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT),
                "cannot list /%s", gname);
        int expected = 0;
        for (int i = 0; i < n && !expected; i++) expected = !strcmp(ts[i].name, name);
        if (!expected) {
            snprintf(err, errlen, "%s: /%s/%s is in the file but not in the model", path, gname, name);
            goto fail;
        }
    }
    h5_close(&group);
    return 0;
fail:
    h5_close(&space);
    h5_close(&type);
    h5_close(&ds);
    h5_close(&group);
    return -1;
}

static int read_group(hid_t file, const char *gname, CkptTensor *ts, int n, const char *path, char *err,
                      size_t errlen) {
    hid_t group = -1, ds = -1;
    h5Check(group = H5Gopen2(file, gname, H5P_DEFAULT), "cannot open group /%s", gname);
    for (int i = 0; i < n; i++) {
        h5Check(ds = H5Dopen2(group, ts[i].name, H5P_DEFAULT), "cannot open /%s/%s", gname, ts[i].name);
        h5Check(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ts[i].data), "cannot read /%s/%s",
                gname, ts[i].name);
        h5_close(&ds);
    }
    h5_close(&group);
    return 0;
fail:
    h5_close(&ds);
    h5_close(&group);
    return -1;
}

// Read a numeric attribute of exactly `count` elements.
static herr_t read_attr(hid_t file, const char *name, hid_t memtype, hssize_t count, void *out) {
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT), space = -1;
    herr_t rc = -1;
    if (attr >= 0 && (space = H5Aget_space(attr)) >= 0 && H5Sget_simple_extent_npoints(space) == count &&
        H5Aread(attr, memtype, out) >= 0)
        rc = 0;
    h5_close(&space);
    h5_close(&attr);
    return rc;
}

int checkpoint_read(const char *path, CkptTensor *params, CkptTensor *m, CkptTensor *v, int n, CkptState *st,
                    char *err, size_t errlen) {
    h5_quiet();
    CkptTensor *const sets[3] = {params, m, v};
    hid_t file = -1;
    char *model = NULL;
    int32_t version = 0;
    CkptState got = {0};
    h5Check(file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), "cannot open checkpoint");
    h5Check(read_attr(file, "format_version", H5T_NATIVE_INT32, 1, &version), "cannot read attribute format_version");
    if (version != CKPT_FORMAT_VERSION) {
        snprintf(err, errlen, "%s: checkpoint format_version %d, this lsst reads %d", path, (int)version,
                 CKPT_FORMAT_VERSION);
        goto fail;
    }
    if (!(model = h5_attr_read_str(file, "model"))) {
        h5_error(err, errlen, __FILE__, __LINE__, path, "cannot read attribute model");
        goto fail;
    }
    if (st->model_json && strcmp(model, st->model_json) != 0) {
        snprintf(err, errlen, "%s: the checkpoint's model %s differs from this run's model %s", path, model,
                 st->model_json);
        goto fail;
    }
    // Every name and shape is checked before any buffer is written.
    for (int g = 0; g < 3; g++)
        if (check_group(file, GROUPS[g], sets[g], n, path, err, errlen) != 0) goto fail;
    h5Check(read_attr(file, "step", H5T_NATIVE_INT64, 1, &got.step), "cannot read attribute step");
    h5Check(read_attr(file, "seed", H5T_NATIVE_UINT64, 1, &got.seed), "cannot read attribute seed");
    h5Check(read_attr(file, "rng", H5T_NATIVE_UINT64, 4, got.rng), "cannot read attribute rng (4 x uint64)");
    h5Check(read_attr(file, "data_position", H5T_NATIVE_INT64, 1, &got.data_position),
            "cannot read attribute data_position");
    for (int g = 0; g < 3; g++)
        if (read_group(file, GROUPS[g], sets[g], n, path, err, errlen) != 0) goto fail;
    h5Check(H5Fclose(file), "cannot close checkpoint");
    got.model_json = st->model_json;   // the caller's string; the file's was compared
    *st = got;
    free(model);
    return 0;
fail:
    h5_close(&file);
    free(model);
    return -1;
}

// Step of a name "step-<digits>.h5", or -1 (temp files "step-N.h5.tmp.PID" and others).
static long long step_of(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 18 || strcmp(q, ".h5") != 0) return -1;
    return strtoll(p, NULL, 10);
}

char *checkpoint_latest(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    long long best = -1;
    char *best_name = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s = step_of(e->d_name);
        if (s > best) {
            best = s;
            free(best_name);
            best_name = xstrdup(e->d_name);
        }
    }
    closedir(d);
    if (!best_name) return NULL;
    char *path = path_join(dir, best_name);
    free(best_name);
    return path;
}

char *checkpoint_path(const char *dir, int64_t step) { return xasprintf("%s/step-%06lld.h5", dir, (long long)step); }
