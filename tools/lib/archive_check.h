// Reading lsst archives (archive_create.h): --verify recomputes every checksum;
// --extract refuses any member that could write outside the target directory, and
// extracts only an archive that verifies. Also the path rules both sides share.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// A member path is safe when it is relative, not empty, and has no ".." component
// ("." components and a leading "./" are allowed). 0, or -1 with the reason in why.
int archive_path_check(const char *path, char *why, size_t n);

// A symbolic link at link_path (relative, already checked) pointing to target is safe
// when the target is relative and, resolved from the link's directory one component
// at a time, never climbs above the top (the extraction directory) and never passes
// THROUGH another symbolic link (is_symlink(path, ctx) says which paths are links), so
// the lexical resolution is the real one. 0, or -1 with the reason in why.
int archive_link_check(const char *link_path, const char *target, bool (*is_symlink)(const char *path, void *ctx),
                       void *ctx, char *why, size_t n);

typedef struct {
    int64_t files, dirs, links;
    uint64_t bytes;
    char top[256];     // the archive's top directory
} ArchiveSummary;

// Read FILE: every member path safe, one top directory, a MANIFEST.sha256 listing
// exactly the regular files with their sha256, a provenance.yaml. 0, or -1 with the
// FIRST problem in err (in archive order: "NAME/metrics/rank-00000.h5: checksum mismatch ...").
int archive_verify(const char *file, ArchiveSummary *sum, char *err, size_t errlen);

// Verify FILE, then extract it into DIR (created if missing) as DIR/TOP, atomically:
// members go to a temporary directory inside DIR that is renamed to DIR/TOP at the end.
// Refuses when DIR/TOP exists. 0, or -1 with a message (nothing left in DIR then).
int archive_extract(const char *file, const char *dir, ArchiveSummary *sum, char *err, size_t errlen);
