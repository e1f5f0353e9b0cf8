// A deterministic archive of a run directory (ARCHITECTURE §6): a tar (pax) stream,
// compressed by the file name's suffix (.tar.zst, .tar.xz or plain .tar), whose bytes
// depend only on the directory's content: entries sorted by path, every header with
// mtime 0, uid/gid 0, no user/group names, mode 0755 (directories, executables) or
// 0644, symbolic links 0777; hard links stored as separate files; no host, date or
// user anywhere. Layout:
//   NAME/                 the run directory's own name first
//   NAME/...              its content, sorted byte-wise by path
//   NAME/provenance.yaml  the run's own, or (none there) a generated one: lsst version + git
//   NAME/MANIFEST.sha256  last: "<sha256>  <path relative to NAME>" per regular file, in
//                         archive order (`cd NAME && sha256sum -c MANIFEST.sha256` checks it)
#pragma once
#include <stddef.h>
#include <stdint.h>

#define ARCHIVE_MANIFEST "MANIFEST.sha256"
#define ARCHIVE_PROVENANCE "provenance.yaml"

typedef enum { ARCHIVE_ZSTD, ARCHIVE_XZ, ARCHIVE_PLAIN } ArchiveCompression;

// The compression for an output file name, or -1 for an unknown suffix.
int archive_compression_for(const char *path);

typedef struct {
    int64_t files, dirs, links;   // entries written (the generated provenance and manifest count as files)
    uint64_t bytes;               // file content bytes
    int64_t skipped;              // special files and links leaving the run directory (warned about)
} ArchiveStats;

// Write the archive of run_dir to out_path (temp file beside it, fsync, rename).
// 0, or -1 with a message in err (nothing left at out_path, an older file there untouched).
int archive_create(const char *run_dir, const char *out_path, ArchiveStats *stats, char *err, size_t errlen);
