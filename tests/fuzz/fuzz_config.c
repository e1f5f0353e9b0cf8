// libFuzzer target: arbitrary bytes as an lsst-run config (YAML parsing, schema
// validation, cross-field rules, error formatting). Any crash, leak or sanitizer
// report is a bug; a rejected input is fine. Run: tests/fuzz/run.sh [SECONDS]
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("config.yaml", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) { close(fd); return 0; }
    char path[64], err[2048];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *sets[] = {"train.steps=3"};
    RunConfig c;
    if (config_load(&c, path, sets, 1, err, sizeof err) == 0) {
        config_check_layout(&c, 2, err, sizeof err);
        char *json = config_model_json(&c);
        free(json);
        config_free(&c);
    }
    close(fd);
    return 0;
}
