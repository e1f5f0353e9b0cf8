// See report_doc.h.
#include "report_doc.h"

#include "common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char *vfmt(const char *fmt, va_list ap) {
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) lsst_die(EXIT_RUNTIME, "out of memory formatting the report");
    return s;
}

static DocBlock *add(Doc *d, DocKind kind) {
    d->blocks = xrealloc(d->blocks, (size_t)(d->n + 1) * sizeof *d->blocks);
    DocBlock *b = &d->blocks[d->n++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->plot = -1;
    return b;
}

void doc_free(Doc *d) {
    for (int i = 0; i < d->n; i++) {
        DocBlock *b = &d->blocks[i];
        free(b->text);
        free(b->anchor);
        for (int k = 0; k < b->n_items; k++) free(b->items[k]);
        free(b->items);
        free(b->align);
    }
    free(d->blocks);
    memset(d, 0, sizeof *d);
}

void doc_heading(Doc *d, int level, const char *anchor, const char *fmt, ...) {
    DocBlock *b = add(d, DOC_HEADING);
    b->level = level;
    b->anchor = anchor ? xstrdup(anchor) : NULL;
    va_list ap;
    va_start(ap, fmt);
    b->text = vfmt(fmt, ap);
    va_end(ap);
}

void doc_para(Doc *d, const char *fmt, ...) {
    DocBlock *b = add(d, DOC_PARA);
    va_list ap;
    va_start(ap, fmt);
    b->text = vfmt(fmt, ap);
    va_end(ap);
}

DocBlock *doc_list(Doc *d) { return add(d, DOC_LIST); }

static void push_item(DocBlock *b, char *s) {
    b->items = xrealloc(b->items, (size_t)(b->n_items + 1) * sizeof *b->items);
    b->items[b->n_items++] = s;
}

void doc_item(DocBlock *list, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    push_item(list, vfmt(fmt, ap));
    va_end(ap);
}

DocBlock *doc_table(Doc *d, int cols, const char *align) {
    DocBlock *b = add(d, DOC_TABLE);
    b->cols = cols;
    b->align = xstrdup(align);
    return b;
}

void doc_cell(DocBlock *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    push_item(t, vfmt(fmt, ap));
    va_end(ap);
}

void doc_plot(Doc *d, int plot) {
    if (plot < 0) return;
    add(d, DOC_PLOT)->plot = plot;
}

// ---- Markdown ----

void doc_put_md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else if (*s == '\n') fputc(' ', f);
        else fputc(*s, f);
    }
}

int doc_write_markdown(const Doc *d, const PlotSet *ps, const char *plots_dir, FILE *f) {
    for (int i = 0; i < d->n; i++) {
        const DocBlock *b = &d->blocks[i];
        switch (b->kind) {
        case DOC_HEADING:
            fprintf(f, "%.*s %s\n\n", b->level, "######", b->text);
            break;
        case DOC_PARA:
            fprintf(f, "%s\n\n", b->text);
            break;
        case DOC_LIST:
            for (int k = 0; k < b->n_items; k++) fprintf(f, "- %s\n", b->items[k]);
            fputc('\n', f);
            break;
        case DOC_TABLE:
            for (int k = 0; k < b->n_items; k++) {
                int col = k % b->cols;
                fputs(col ? " " : "| ", f);
                doc_put_md_cell(f, b->items[k]);
                fputs(" |", f);
                if (col == b->cols - 1) {
                    fputc('\n', f);
                    if (k == b->cols - 1) {   // after the header
                        fputc('|', f);
                        for (int c = 0; c < b->cols; c++) fputs(b->align[c] == 'r' ? "---:|" : "---|", f);
                        fputc('\n', f);
                    }
                }
            }
            fputc('\n', f);
            break;
        case DOC_PLOT: {
            const Plot *p = &ps->plots[b->plot];
            if (p->svg) fprintf(f, "![%s](%s/%s.svg)\n\n", p->caption, plots_dir, p->name);
            else fprintf(f, "(plot not drawn: %s)\n\n", p->caption);
            break;
        }
        }
    }
    return ferror(f) ? -1 : 0;
}

// ---- HTML ----

void doc_put_html(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char STYLE[] =
    "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;"
    "padding:0 1em;color:#1a1a1a;line-height:1.4}\n"
    "h1{font-size:1.6em;border-bottom:2px solid #333;padding-bottom:.2em}\n"
    "h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #bbb}\n"
    "h3{font-size:1.1em;margin-top:1.4em}\n"
    "table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}\n"
    "th,td{border:1px solid #ccc;padding:.25em .6em;vertical-align:top}\n"
    "th{background:#f0f0f0;text-align:left}\n"
    "td.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "tbody tr:nth-child(even){background:#fafafa}\n"
    "figure{margin:1em 0}\n"
    "figure svg{max-width:100%;height:auto;display:block;border:1px solid #ddd}\n"
    "figcaption{font-size:.9em;color:#444;margin-top:.3em}\n"
    "p.missing{color:#a00}\n";

int doc_write_html(const Doc *d, const PlotSet *ps, const char *title, FILE *f) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
          f);
    doc_put_html(f, title);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", STYLE);
    for (int i = 0; i < d->n; i++) {
        const DocBlock *b = &d->blocks[i];
        switch (b->kind) {
        case DOC_HEADING:
            fprintf(f, "<h%d", b->level);
            if (b->anchor) {
                fputs(" id=\"", f);
                doc_put_html(f, b->anchor);
                fputc('"', f);
            }
            fputc('>', f);
            doc_put_html(f, b->text);
            fprintf(f, "</h%d>\n", b->level);
            break;
        case DOC_PARA:
            fputs("<p>", f);
            doc_put_html(f, b->text);
            fputs("</p>\n", f);
            break;
        case DOC_LIST:
            fputs("<ul>\n", f);
            for (int k = 0; k < b->n_items; k++) {
                fputs("<li>", f);
                doc_put_html(f, b->items[k]);
                fputs("</li>\n", f);
            }
            fputs("</ul>\n", f);
            break;
        case DOC_TABLE:
            fputs("<table>\n<thead>\n", f);
            for (int k = 0; k < b->n_items; k++) {
                int col = k % b->cols;
                bool head = k < b->cols;
                if (col == 0) fputs("<tr>", f);
                fputs(head ? "<th>" : b->align[col] == 'r' ? "<td class=\"r\">" : "<td>", f);
                doc_put_html(f, b->items[k]);
                fputs(head ? "</th>" : "</td>", f);
                if (col == b->cols - 1) fputs(k == b->cols - 1 ? "</tr>\n</thead>\n<tbody>\n" : "</tr>\n", f);
            }
            fputs("</tbody>\n</table>\n", f);
            break;
        case DOC_PLOT: {
            const Plot *p = &ps->plots[b->plot];
            if (p->svg) {
                fputs("<figure>\n", f);
                fputs(p->svg, f);
                fputs("\n<figcaption>", f);
                doc_put_html(f, p->caption);
                fputs("</figcaption>\n</figure>\n", f);
            } else {
                fputs("<p class=\"missing\">Plot not drawn: ", f);
                doc_put_html(f, p->caption);
                fputs("</p>\n", f);
            }
            break;
        }
        }
    }
    fputs("</body>\n</html>\n", f);
    return ferror(f) ? -1 : 0;
}
