// What lsst-report says: the report's document (report_doc.h) and plots
// (report_plot.h) built from the loaded jobs, and the number formats it uses.
#pragma once
#include "report_doc.h"
#include "report_job.h"
#include "report_plot.h"

#include <stddef.h>
#include <stdint.h>

// Queue the plots and build the document. The plots are referenced by index, so
// they can be rendered (plot_render) after this and before writing.
void report_build(const Report *r, Doc *d, PlotSet *ps);

// Human formats (buf of at least 32 bytes; "n/a" for NaN): "12.3 ms", "1.92 GiB", "12.5%", "5.61x".
const char *fmt_seconds(char *buf, size_t n, double seconds);
const char *fmt_bytes(char *buf, size_t n, double bytes);
const char *fmt_percent(char *buf, size_t n, double fraction);
const char *fmt_ratio(char *buf, size_t n, double ratio);
const char *fmt_number(char *buf, size_t n, double x);   // 3 significant digits, SI suffix: "1.23 M"
