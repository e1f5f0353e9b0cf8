// The cause of an HDF5 failure in one line, for the tools and the runtime alike.
#pragma once
#include <stddef.h>

// The innermost (most specific) message on HDF5's error stack — for a failed system
// call the OS message ("No space left on device") — then clears the stack. NULL when
// the stack is empty. The text lives until the next call.
const char *h5_cause(void);
// err = the printf-formatted message, then ": CAUSE" when HDF5 left one (h5_cause).
void h5_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
