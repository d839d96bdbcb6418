/* A minimal driver in C against include/leitsystem_plugin.h: a "display" that reports every
   message it receives back to the host as a log line, and refuses a config asking it to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "leitsystem_plugin.h"

/* Tests build a variant with another ABI version to check that the host refuses it. */
#ifndef TEST_ABI_VERSION
#define TEST_ABI_VERSION LEITSYSTEM_PLUGIN_ABI_VERSION
#endif

/* A variant that calls a function no library defines: a build against a newer library than
   the one installed. The host must refuse it when loading, not abort at its first call. */
#ifdef TEST_UNRESOLVED_SYMBOL
extern void leitsystem_test_missing_function(void);
#endif

typedef struct echo {
    ls_host_api host;
    unsigned long received;
} echo;

static void set_error(char *err, size_t cap, const char *text) {
    if (err != NULL && cap > 0) {
        snprintf(err, cap, "%s", text);
    }
}

static int32_t echo_create(const uint8_t *config, size_t config_len, const ls_host_api *host,
                           void **instance, char *err, size_t err_cap) {
    if (host == NULL || host->size < sizeof(ls_host_api) || instance == NULL) {
        set_error(err, err_cap, "bad call");
        return 3;
    }
    /* Plugins parse their JSON config with any JSON library; this one only looks for a word. */
    if (config_len > 0 && memmem(config, config_len, "refuse", 6) != NULL) {
        set_error(err, err_cap, "refused by its config");
        return 1;
    }
#ifdef TEST_SLOW_CREATE_MS
    /* A driver whose device takes a while to open (a printer warming up). */
    usleep(TEST_SLOW_CREATE_MS * 1000);
#endif
    echo *self = calloc(1, sizeof(echo));
    if (self == NULL) {
        set_error(err, err_cap, "out of memory");
        return 1;
    }
    self->host = *host;
    *instance = self;
    return 0;
}

static int32_t echo_send(void *instance, const uint8_t *message, size_t len, char *err,
                         size_t err_cap) {
    echo *self = instance;
    if (self == NULL || message == NULL) {
        set_error(err, err_cap, "bad call");
        return 3;
    }
    self->received++;
#ifdef TEST_UNRESOLVED_SYMBOL
    leitsystem_test_missing_function();
#endif
#ifdef TEST_BLOCK_IN_SEND
    /* A driver waiting for a device that never answers. */
    for (;;) {
        pause();
    }
#endif
    char reply[160];
    int n = snprintf(reply, sizeof reply,
                     "{\"v\":1,\"type\":\"log\",\"level\":\"info\",\"message\":\"C plugin got message %lu of %zu bytes\"}",
                     self->received, len);
    self->host.emit(self->host.ctx, (const uint8_t *)reply, (size_t)n);
    return 0;
}

static void echo_destroy(void *instance) { free(instance); }

static const ls_plugin_descriptor DESCRIPTOR = {
    .size = sizeof(ls_plugin_descriptor),
    .abi_version = TEST_ABI_VERSION,
    .name = "c-echo",
    .version = "1.0.0",
    .roles = "display",
    .create = echo_create,
    .send = echo_send,
    .destroy = echo_destroy,
};

const ls_plugin_descriptor *leitsystem_plugin_entry(void) { return &DESCRIPTOR; }
