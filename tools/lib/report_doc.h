// A small document model (headings, paragraphs, lists, tables, plots) that
// lsst-report builds once and renders twice: Markdown (report.md) and one
// self-contained HTML page (report.html, plots inlined as SVG, no scripts, no
// network). Text is plain; the renderers escape it.
#pragma once
#include "report_plot.h"

#include <stdio.h>

typedef enum { DOC_HEADING, DOC_PARA, DOC_LIST, DOC_TABLE, DOC_PLOT } DocKind;

typedef struct {
    DocKind kind;
    int level;         // heading: 1..3
    char *text;        // heading, paragraph
    char *anchor;      // heading: HTML id (may be NULL)
    char **items;      // list items; table cells, row-major, row 0 = header
    int n_items;
    int cols;          // table
    char *align;       // table: 'l' or 'r' per column
    int plot;          // plot index into the PlotSet
} DocBlock;

typedef struct {
    DocBlock *blocks;
    int n;
} Doc;

void doc_free(Doc *d);
void doc_heading(Doc *d, int level, const char *anchor, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void doc_para(Doc *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
DocBlock *doc_list(Doc *d);
void doc_item(DocBlock *list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// A table of `cols` columns; align: one 'l'/'r' per column. Header and body cells
// are then added in order with doc_cell.
DocBlock *doc_table(Doc *d, int cols, const char *align);
void doc_cell(DocBlock *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void doc_plot(Doc *d, int plot);   // no-op for plot < 0

// Render. plots_dir: where report.md's image links point ("plots"). 0, or -1 (write error).
int doc_write_markdown(const Doc *d, const PlotSet *ps, const char *plots_dir, FILE *f);
int doc_write_html(const Doc *d, const PlotSet *ps, const char *title, FILE *f);

// Text escaping (exposed for the tests).
void doc_put_html(FILE *f, const char *s);   // & < > " '
void doc_put_md_cell(FILE *f, const char *s); // | and newlines in table cells
