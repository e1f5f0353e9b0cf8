// The byte source of lsst-prep: a regular file read with large sequential
// reads, or the single member of a .zip streamed through libarchive (never
// unzipped to disk). Only lsst-prep uses it.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// An error: the exit code it calls for (EXIT_USAGE for bad input, EXIT_RUNTIME
// for I/O failures) and one line naming the file and the cause.
typedef struct {
    int code;
    char msg[768];
} PrepError;

typedef struct PrepInput PrepInput;

// A path is read as a zip exactly when its name ends in ".zip" (any case).
bool prep_input_path_is_zip(const char *path);

// Open `path`. A zip must hold exactly one member, a regular file. NULL on failure.
PrepInput *prep_input_open(const char *path, PrepError *e);
// Bytes of content (the member's uncompressed size for a zip), or -1 when the
// zip does not record it (then the caller counts in a first pass).
int64_t prep_input_size(const PrepInput *in);
// The zip member's name, or NULL for a plain file.
const char *prep_input_member(const PrepInput *in);
// Size of the file on disk (the .zip itself for a zip), bytes.
uint64_t prep_input_file_size(const PrepInput *in);
// Read up to n bytes; fewer only at the end of the content. Returns the count
// (0 at the end), or -1 with e filled. For a zip, reaching the end also checks
// the member's CRC.
ssize_t prep_input_read(PrepInput *in, void *buf, size_t n, PrepError *e);
// Start again from the first byte (for a second pass). 0 or -1 with e filled.
int prep_input_rewind(PrepInput *in, PrepError *e);
void prep_input_close(PrepInput *in);
