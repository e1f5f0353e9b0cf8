// The data loader: token windows from an lsst-prep directory (see data.h).
//
// A split is its manifest's shard list; shard i holds split tokens
// [first[i], first[i+1]). A read selects a hyperslab of each shard it touches and
// reads just that range (HDF5 converts uint8 to int on the way). Shard files are
// opened on first use and stay open until data_close: lsst-run reads every step.
#include "data.h"

#include "common.h"
#include "h5util.h"
#include "manifest.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct DataSplit {
    Manifest manifest;
    const ManifestSplit *split;   // inside manifest
    uint64_t *first;              // (nshards + 1) split index of each shard's first token; first[nshards] = tokens
    char **paths;                 // (nshards) DIR/FILE
    hid_t *file, *dset, *space;   // (nshards) each -1 until the shard is first read
};

DataSplit *data_open(const char *dir, const char *split, char *err, size_t errlen) {
    h5_quiet();
    DataSplit *d = xcalloc(1, sizeof *d);
    if (manifest_load(&d->manifest, dir, err, errlen) != 0) {
        free(d);
        return NULL;
    }
    d->split = manifest_split(&d->manifest, split);
    if (!d->split) {
        snprintf(err, errlen, "%s/%s: no split '%s' (train, valid, test)", dir, MANIFEST_FILE, split);
        data_close(d);
        return NULL;
    }
    int ns = d->split->nshards;
    d->first = xcalloc((size_t)ns + 1, sizeof *d->first);
    d->paths = xcalloc((size_t)ns, sizeof *d->paths);
    d->file = xmalloc((size_t)ns * sizeof *d->file);
    d->dset = xmalloc((size_t)ns * sizeof *d->dset);
    d->space = xmalloc((size_t)ns * sizeof *d->space);
    for (int i = 0; i < ns; i++) {
        d->first[i + 1] = d->first[i] + d->split->shards[i].tokens;   // the manifest checked contiguity and sums
        d->paths[i] = path_join(dir, d->split->shards[i].file);
        d->file[i] = d->dset[i] = d->space[i] = -1;
    }
    // Shards open lazily, but a missing one should fail now, before a run allocates, not at step N.
    for (int i = 0; i < ns; i++)
        if (access(d->paths[i], R_OK) != 0) {
            snprintf(err, errlen, "%s: cannot read shard of split %s listed in %s: %s", d->paths[i], split,
                     MANIFEST_FILE, strerror(errno));
            data_close(d);
            return NULL;
        }
    return d;
}

uint64_t data_tokens(const DataSplit *d) { return d->split->tokens; }

int data_vocab_size(const DataSplit *d) { return d->manifest.vocab_size; }

// Open shard s and check it is the one the manifest describes: /tokens, 1-D,
// integer, the listed token count, attribute offset = the listed source offset.
static int open_shard(DataSplit *d, int s, char *err, size_t errlen) {
    const char *path = d->paths[s];
    const ManifestShard *sh = &d->split->shards[s];
    hid_t type = -1, attr = -1;
    hsize_t dims[1];
    uint64_t offset;
    h5Check(d->file[s] = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), "cannot open shard");
    h5Check(d->dset[s] = H5Dopen2(d->file[s], "/tokens", H5P_DEFAULT), "cannot open dataset /tokens");
    h5Check(d->space[s] = H5Dget_space(d->dset[s]), "cannot read the shape of /tokens");
    h5Check(type = H5Dget_type(d->dset[s]), "cannot read the type of /tokens");
    if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_ndims(d->space[s]) != 1) {
        snprintf(err, errlen, "%s: /tokens is not a 1-D integer dataset (not an lsst-prep shard)", path);
        goto fail;
    }
    H5Sget_simple_extent_dims(d->space[s], dims, NULL);
    if (dims[0] != sh->tokens) {
        snprintf(err, errlen, "%s: /tokens holds %llu tokens, but %s lists %llu", path, (unsigned long long)dims[0],
                 MANIFEST_FILE, (unsigned long long)sh->tokens);
        goto fail;
    }
    h5Check(attr = H5Aopen(d->dset[s], "offset", H5P_DEFAULT), "cannot open attribute offset of /tokens");
    h5Check(H5Aread(attr, H5T_NATIVE_UINT64, &offset), "cannot read attribute offset of /tokens");
    if (offset != sh->offset) {
        snprintf(err, errlen, "%s: /tokens starts at source offset %llu, but %s lists %llu", path,
                 (unsigned long long)offset, MANIFEST_FILE, (unsigned long long)sh->offset);
        goto fail;
    }
    h5_close(&type);
    h5_close(&attr);
    return 0;
fail:
    h5_close(&type);
    h5_close(&attr);
    h5_close(&d->space[s]);
    h5_close(&d->dset[s]);
    h5_close(&d->file[s]);
    return -1;
}

int data_read(DataSplit *d, uint64_t start, int n, int *out, char *err, size_t errlen) {
    uint64_t ntokens = data_tokens(d);
    if (n < 0 || start > ntokens || (uint64_t)n > ntokens - start) {
        snprintf(err, errlen, "%s: read of tokens [%llu, %llu) is outside split %s (%llu tokens)", d->manifest.dir,
                 (unsigned long long)start, (unsigned long long)start + (n > 0 ? (unsigned long long)n : 0),
                 d->split->name, (unsigned long long)ntokens);
        return -1;
    }
    // The shard holding `start`: the last s with first[s] <= start.
    int lo = 0, hi = d->split->nshards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (d->first[mid] <= start) lo = mid;
        else hi = mid - 1;
    }
    int vocab = data_vocab_size(d);
    hid_t mem = -1;
    const char *path = d->manifest.dir;
    for (int s = lo, done = 0; done < n; s++) {
        path = d->paths[s];
        if (d->file[s] < 0 && open_shard(d, s, err, errlen) != 0) return -1;
        uint64_t pos = start + (uint64_t)done;
        hsize_t local = pos - d->first[s];
        hsize_t take = d->first[s + 1] - pos;
        if (take > (hsize_t)(n - done)) take = (hsize_t)(n - done);
        h5Check(H5Sselect_hyperslab(d->space[s], H5S_SELECT_SET, &local, NULL, &take, NULL),
                "cannot select tokens [%llu, %llu)", (unsigned long long)local, (unsigned long long)(local + take));
        h5Check(mem = H5Screate_simple(1, &take, NULL), "cannot create a memory space of %llu tokens",
                (unsigned long long)take);
        h5Check(H5Dread(d->dset[s], H5T_NATIVE_INT, mem, d->space[s], H5P_DEFAULT, out + done),
                "cannot read tokens [%llu, %llu) of /tokens", (unsigned long long)local,
                (unsigned long long)(local + take));
        h5_close(&mem);
        // An id outside the vocabulary would index past the embedding table.
        for (int i = done; i < done + (int)take; i++)
            if (out[i] < 0 || out[i] >= vocab) {
                snprintf(err, errlen, "%s: token %llu of /tokens is %d, outside the vocabulary (size %d)", path,
                         (unsigned long long)(local + (uint64_t)(i - done)), out[i], vocab);
                return -1;
            }
        done += (int)take;
    }
    return 0;
fail:
    h5_close(&mem);
    return -1;
}

void data_close(DataSplit *d) {
    if (!d) return;
    int ns = d->split && d->file ? d->split->nshards : 0;
    for (int i = 0; i < ns; i++) {
        h5_close(&d->space[i]);
        h5_close(&d->dset[i]);
        h5_close(&d->file[i]);
    }
    if (d->paths)
        for (int i = 0; i < ns; i++) free(d->paths[i]);
    free(d->paths);
    free(d->first);
    free(d->file);
    free(d->dset);
    free(d->space);
    manifest_free(&d->manifest);
    free(d);
}

// ---- sampling ----

#define GOLDEN 0x9e3779b97f4a7c15ULL   // 2^64 / golden ratio: splitmix64's counter increment

// The splitmix64 output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Counter-based: a key from (seed, step, index) -- each absorbed through a full mix,
// so nearby triples give unrelated keys -- then the splitmix64 stream of that key,
// x_k = mix64(key + k * GOLDEN), as many draws as the rejection step needs (almost
// always one). Uniform over [0, range) without modulo bias: Lemire's multiply-shift
// (the high 64 bits of x * range) rejecting the 2^64 mod range low values that would
// make some results more likely (D. Lemire, "Fast random integer generation in an
// interval", ACM TOMACS 2019).
uint64_t data_sample_start(uint64_t seed, int64_t step, int64_t index, uint64_t ntokens, int seq_len) {
    if (seq_len < 0 || ntokens <= (uint64_t)seq_len) return 0;   // no full window: the caller checks sizes
    uint64_t range = ntokens - (uint64_t)seq_len;                 // starts 0 .. ntokens - seq_len - 1
    uint64_t key = mix64(seed + GOLDEN);
    key = mix64((key ^ (uint64_t)step) + GOLDEN);
    key = mix64((key ^ (uint64_t)index) + GOLDEN);
    uint64_t threshold = -range % range;   // 2^64 mod range
    for (uint64_t k = 1;; k++) {
        unsigned __int128 m = (unsigned __int128)mix64(key + k * GOLDEN) * range;
        if ((uint64_t)m >= threshold) return (uint64_t)(m >> 64);
    }
}

// Window k covers tokens [k * seq_len, k * seq_len + seq_len]: inputs and targets, the
// windows' targets tiling the split. (ntokens - 1) / seq_len of them fit.
uint64_t data_eval_start(int64_t index, uint64_t ntokens, int seq_len) {
    if (seq_len <= 0 || ntokens <= (uint64_t)seq_len) return 0;
    uint64_t windows = (ntokens - 1) / (uint64_t)seq_len;
    // index mod windows, also for a negative index (-1 is the last window).
    uint64_t k = index >= 0 ? (uint64_t)index % windows : windows - 1 - (uint64_t)(-(index + 1)) % windows;
    return k * (uint64_t)seq_len;
}
